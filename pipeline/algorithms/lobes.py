"""Sharper low harmonics for an estimated magnitude: window lobes fitted to the low mel bands.

Below ~1 kHz the mel bands of speech configs lie closer together than the voice's harmonics
(80 slaney bands at 16 kHz: 37 Hz apart, against a pitch of 80-250 Hz), so the mel there says
where the harmonics are. The learned inverter, trained frame by frame, smears them: peaks too
low, valleys too full, and that costs the speech after FGLA more than any other band
(BENCHMARKS.md, decisions log).

:func:`refine_low_band` fits the mel bands that lie wholly below ``top_hz`` with non-negative
copies of the analysis window's spectral lobe on a half-bin grid (FISTA on a least-squares fit
with a small L1 weight: few, sharp peaks), then below ``keep_hz`` replaces the estimate by the
geometric mean of it and the fit, the fit floored at ``floor`` times the estimate (between its
lobes the fit is zero, which no recording is). Nothing is learned; the parameters were chosen
on held-out Russian and validation speech, not on the test corpus.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.config import AudioConfig
from pipeline.dsp.mel import decompress, filterbank, window
from pipeline.errors import UsageError


@dataclass(frozen=True)
class LobeFit:
    top_hz: float = 750.0     # fit the mel bands wholly below this
    keep_hz: float = 625.0    # change the estimate below this
    over: int = 2             # lobe positions per bin
    l1: float = 1e-3          # L1 weight, relative to each frame's mel norm
    iters: int = 30           # FISTA iterations
    floor: float = 0.3        # the fit, floored at this times the estimate
    weight: float = 0.5       # of the fit in the (log-domain) mean with the estimate


@functools.lru_cache(maxsize=8)
def _system(cfg: AudioConfig, p: LobeFit) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int, float]:
    """(mel rows fitted, lobes ``[nb, atoms]``, sensing ``[m, atoms]``, nb, kb, Lipschitz)."""
    fb = filterbank(cfg).double().numpy()                             # [M, F]
    nb = int(np.ceil(p.top_hz * cfg.n_fft / cfg.sample_rate))
    kb = int(np.ceil(p.keep_hz * cfg.n_fft / cfg.sample_rate))
    rows = np.flatnonzero((fb[:, nb:] == 0).all(1) & (fb[:, :nb] > 0).any(1))
    if len(rows) < 2:
        raise UsageError(f"the lobe refinement needs mel bands below {p.top_hz:g} Hz; config "
                         f"{cfg.name!r} has {len(rows)}: use a model card without refine")
    # the analysis window as torch.stft applies it (centred in n_fft), its DTFT magnitude at
    # offsets that are multiples of 1/over bin, out to 8 bins (side lobes beyond: < -50 dB)
    w = np.zeros(cfg.n_fft)
    start = (cfg.n_fft - cfg.win_length) // 2
    w[start:start + cfg.win_length] = window(cfg, dtype=torch.float64).numpy()
    offsets = np.arange(-8 * p.over, 8 * p.over + 1) / p.over
    lobe = np.abs(np.exp(2j * np.pi * np.outer(offsets, np.arange(cfg.n_fft)) / cfg.n_fft) @ w)
    lobe /= lobe.max()
    pos = np.arange(nb * p.over) / p.over                             # atom centres, in bins
    k = np.rint((np.arange(nb)[:, None] - pos[None, :]) * p.over).astype(int) + 8 * p.over
    L = np.where((k >= 0) & (k < len(lobe)), lobe[np.clip(k, 0, len(lobe) - 1)], 0.0)
    L = L ** cfg.power                                                # mels of |X|^power
    S = fb[rows][:, :nb] @ L
    lip = float(np.linalg.norm(S, 2) ** 2)
    return (torch.from_numpy(rows), torch.from_numpy(L.astype(np.float32)),
            torch.from_numpy(S.astype(np.float32)), nb, kb, lip)


def _fista(y: torch.Tensor, S: torch.Tensor, lip: float, l1: float, iters: int) -> torch.Tensor:
    """Non-negative ``a`` minimising ``|S a - y|^2 / 2 + l1 |y| sum(a)`` per row of ``y``."""
    Sn = S / lip
    b = y @ Sn - (l1 / lip) * torch.linalg.vector_norm(y, dim=1, keepdim=True)
    St = S.T.contiguous()
    a = z = torch.zeros(y.shape[0], S.shape[1], dtype=y.dtype, device=y.device)
    t = 1.0
    for _ in range(iters):
        new = torch.addmm(b, z @ St, Sn, alpha=-1).add_(z).clamp_min_(0)
        t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
        z = torch.lerp(new, a, -(t - 1) / t_next)                     # new + m (new - a)
        a, t = new, t_next
    return a


def refine_low_band(mag: torch.Tensor, mel: torch.Tensor, cfg: AudioConfig,
                    p: LobeFit = LobeFit(), chunk: int = 2048) -> torch.Tensor:
    """``mag [..., T, F]`` (an estimate of the magnitude of compressed ``mel [..., T, M]``)
    with its bins below ``p.keep_hz`` sharpened by the lobe fit; the rest unchanged."""
    rows, L, S, nb, kb, lip = _system(cfg, p)
    dev = mag.device
    flat_mel = decompress(mel.reshape(-1, mel.shape[-1]), cfg).index_select(1, rows.to(dev))
    flat_mag = mag.reshape(-1, mag.shape[-1])
    out = flat_mag.clone()
    L, S = L.to(dev), S.to(dev)
    for i in range(0, flat_mel.shape[0], chunk):   # chunks that stay in cache (measured)
        a = _fista(flat_mel[i:i + chunk].float(), S, lip, p.l1, p.iters)
        fit = (a @ L[:kb].T).clamp_min(0) ** (1 / cfg.power)          # [n, kb]
        est = flat_mag[i:i + chunk, :kb]
        out[i:i + chunk, :kb] = est ** (1 - p.weight) * torch.maximum(fit, p.floor * est) ** p.weight
    return out.reshape(mag.shape)
