"""Deep Griffin-Lim Iteration (Masuyama, Yatabe, Koizumi, Oikawa & Harada, ICASSP 2019).

One block, weights shared by all blocks:
``Y = P_A(X)`` (amplitude projection), ``Z = P_C(Y)`` (consistency projection: STFT of the
ISTFT), ``X' = Z - DNN(X, Y, Z)`` (a small gated conv net estimates the residual).

Departures from the paper, for a net small enough for CPUs:
- the net sees X, Y, Z divided by the known magnitude (plus a small floor) and the
  log-magnitude, and its residual is multiplied back by it: every bin is on the same scale,
  whatever the level (the first version, normalised by the utterance's peak, learned nothing:
  quiet bins were all ~0 to it);
- it is trained where it is used: on FGLA iterates of true magnitudes (``warmup`` iterations
  from a zero or random phase), not on additive noise, and its loss is the inconsistency of
  its output (see ``_loss``), not the distance to the true phase;
- inference runs ``warmup`` FGLA iterations (default: the regime the net was trained for),
  then ``n_iter`` blocks;
- ``magnitude="model"``: a net trained after the learned inverter's magnitudes (which are
  estimates, not the truth). Its output is not projected back onto the estimate, so a block
  may correct the magnitude as well as the phase; its loss is the distance of the output's
  re-analysed magnitude to the true one. With a zero residual it is exactly FGLA
  (ISTFT(P_C(Y)) = ISTFT(Y)).
Shapes: magnitude ``[B, T, F]``, complex spectrograms ``[B, T, F]``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline.algorithms.gla import initial_phase, iterate, project
from pipeline.config import AudioConfig
from pipeline.dsp.spectral import spectral_convergence
from pipeline.dsp.stft import FramePair
from pipeline.io.weights import WeightsError, load_state, pick_for
from pipeline.parallel.batching import tick

REL_FLOOR = 1e-3     # magnitude floor relative to the item's peak, for the normalisation
FEATURE_CLIP = 20.0


@dataclass(frozen=True)
class DeGLIConfig:
    channels: int = 8
    kernel_t: int = 3
    kernel_f: int = 5
    warmup: int = 100     # FGLA iterations before the first block at inference
    magnitude: str = "true"   # "true": phase only; "model": after the learned inverter (see above)
    invert_weights: str | None = None   # the inverter a "model" net was trained after
    momentum: float = 0.0     # > 0: blocks chained with FGLA's momentum (see ``run_blocks``)
    horizon: int = 0          # > 0: the net acts in the first ``horizon`` blocks only (the
                              # chain length it was trained on), then plain (F)GLA steps


class _GatedConv(nn.Module):
    def __init__(self, cin, cout, kt, kf):
        super().__init__()
        self.conv = nn.Conv2d(cin, 2 * cout, (kt, kf), padding=(kt // 2, kf // 2))

    def forward(self, x):
        a, b = self.conv(x).chunk(2, dim=1)
        return a * torch.sigmoid(b)


class DeGLINet(nn.Module):
    """Residual estimator: X, Y, Z relative to the magnitude (6 channels) + log-magnitude ->
    complex residual (relative to the magnitude)."""

    def __init__(self, audio: AudioConfig, hp: DeGLIConfig = DeGLIConfig()):
        super().__init__()
        self.audio, self.hparams = audio, hp
        c, k = hp.channels, (hp.kernel_t, hp.kernel_f)
        pad = (hp.kernel_t // 2, hp.kernel_f // 2)
        self.body = nn.Sequential(_GatedConv(7, c, *k), _GatedConv(c, c, *k))
        self.out = nn.Conv2d(c, 2, k, padding=pad)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)  # type: ignore[arg-type]  # starts as plain GLA

    def forward(self, x, y, z, mag):
        ref = mag.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-8)
        m = mag + REL_FLOOR * ref
        rel = [t / m for t in (x.real, x.imag, y.real, y.imag, z.real, z.imag)]
        feats = torch.stack([*rel, (m / ref).log() / 5], 1).clamp(-FEATURE_CLIP, FEATURE_CLIP)
        r = self.out(self.body(feats))
        return torch.complex(r[:, 0], r[:, 1]) * m

    def card(self) -> dict:
        return {"arch": "DeGLI", "audio": self.audio.to_dict(), "model": asdict(self.hparams)}


def run_blocks(net: DeGLINet, x: torch.Tensor, mag: torch.Tensor, pair: FramePair, n: int,
               momentum: float | None = None, inconsistency: list | None = None) -> torch.Tensor:
    """``n`` blocks from ``x`` (one block: ``Y = P_A(X)``, ``Z = P_C(Y)``, ``Z - DNN(X, Y, Z)``).
    With momentum ``m`` > 0 (default: the net's) the blocks are chained like FGLA's
    iterations: ``t_k = block(x_k)``, ``x_{k+1} = t_k - m/(1+m) t_{k-1}``,
    so a zero residual is exactly FGLA (the paper's chain, ``m = 0``, is GLA). Returns the last
    ``x`` (not amplitude-projected). ``inconsistency``: if a list, each block appends
    ``|| |P_C(P_A(x_k))| - mag || / ||mag||`` of its input, which the block computes anyway
    (the training loss of unrolled chains). A net with a ``horizon`` acts in the first
    ``horizon`` blocks only; later blocks are zero-residual ones, i.e. (F)GLA iterations
    continuing the same chain (measured: past the chain length it was trained on, the net
    made speech worse)."""
    m = net.hparams.momentum if momentum is None else momentum
    alpha = m / (1.0 + m)
    horizon = net.hparams.horizon or n
    prev = None
    for k in range(n):
        tick()
        y = project(x, mag)
        z = pair.stft(pair.istft(y))
        if inconsistency is not None:
            inconsistency.append(spectral_convergence(reference=mag, estimate=z.abs(), dim=None, eps=1e-8))
        t = z - net(x, y, z, mag) if k < horizon else z
        x = t - alpha * prev if prev is not None and alpha else t
        prev = t
    return x


_DEGLI_CACHE: dict = {}


def load_degli(name_or_path: str | Path | None, config: AudioConfig,
               device: torch.device | str = "cpu"):
    """The DeGLI residual net for ``config`` (cached per process: phase calls it per bucket)."""
    name_or_path = name_or_path or pick_for(config, "DeGLI")
    key = (str(name_or_path), config, str(device))
    if key not in _DEGLI_CACHE:
        state, card = load_state(name_or_path)
        diff = AudioConfig.from_dict(card["audio"]).diff(config)
        if diff:
            raise WeightsError(f"DeGLI weights {name_or_path} were trained on another audio "
                               f"config: {'; '.join(diff)}")
        net = DeGLINet(AudioConfig.from_dict(card["audio"]), DeGLIConfig(**card["model"]))
        net.load_state_dict(state)
        _DEGLI_CACHE[key] = net.to(device).eval()
    return _DEGLI_CACHE[key]


@torch.inference_mode()
def degli(mag: torch.Tensor, lengths: torch.Tensor, cfg: AudioConfig, n_iter: int = 10, *,
          model: DeGLINet | None = None, weights: str | None = None, init="zeros",
          generator=None, pair: FramePair | None = None, warmup: int | None = None,
          momentum: float = 0.99) -> tuple[torch.Tensor, FramePair]:
    """``warmup`` FGLA iterations (default: the net's), then ``n_iter`` DeGLI blocks; returns
    padded waveforms and the frame pair."""
    if model is None:
        model = load_degli(weights, cfg, mag.device)
    if pair is None:
        pair = FramePair(cfg, mag.shape[1], lengths, mag.device, mag.dtype)
    warm = model.hparams.warmup if warmup is None else warmup
    x = mag * (initial_phase(mag, init, generator, cfg) if isinstance(init, str) else init)
    x = iterate(x, mag, pair, warm, momentum)
    x = run_blocks(model, x, mag, pair, n_iter)
    if model.hparams.magnitude == "true" or n_iter == 0:
        x = project(x, mag)
    else:   # unprojected: the batch-padding frames still hold the consistency projection's tail
        x = pair.own_frames(x)
    return pair.istft(x), pair
