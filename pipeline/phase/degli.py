"""Deep Griffin-Lim Iteration (Masuyama, Yatabe, Koizumi, Oikawa & Harada, ICASSP 2019).

One block, weights shared by all blocks:
``Y = P_A(X)`` (amplitude projection), ``Z = P_C(Y)`` (consistency projection: STFT of the
ISTFT), ``X' = Z - DNN(X, Y, Z)`` (a small complex-as-two-channels conv net estimates the
residual). Trained as a denoiser: ``X = S + noise`` at random SNRs, target the true
complex STFT ``S``, L1 loss. At inference the block is repeated ``n_iter`` times from an
initial phase. Shapes: magnitude ``[B, T, F]``, complex spectrograms ``[B, T, F]``.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import AudioConfig
from .gla import EPS, initial_phase
from .stft import FramePair


@dataclass(frozen=True)
class DeGLIConfig:
    channels: int = 12
    kernel_t: int = 3
    kernel_f: int = 5


class _GatedConv(nn.Module):
    def __init__(self, cin, cout, kt, kf):
        super().__init__()
        self.conv = nn.Conv2d(cin, 2 * cout, (kt, kf), padding=(kt // 2, kf // 2))

    def forward(self, x):
        a, b = self.conv(x).chunk(2, dim=1)
        return a * torch.sigmoid(b)


class DeGLINet(nn.Module):
    """Residual estimator: real/imag of X, Y, Z (6 channels) -> complex residual."""

    def __init__(self, audio: AudioConfig, hp: DeGLIConfig = DeGLIConfig()):
        super().__init__()
        self.audio, self.hparams = audio, hp
        c = hp.channels
        self.body = nn.Sequential(_GatedConv(6, c, hp.kernel_t, hp.kernel_f),
                                  _GatedConv(c, c, hp.kernel_t, hp.kernel_f))
        self.out = nn.Conv2d(c, 2, (hp.kernel_t, hp.kernel_f), padding=(hp.kernel_t // 2, hp.kernel_f // 2))
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)   # starts as plain GLA

    def forward(self, x, y, z):
        scale = y.abs().amax(dim=(-2, -1), keepdim=True).clamp_min(1e-8)   # level-invariant
        feats = torch.stack([x.real, x.imag, y.real, y.imag, z.real, z.imag], 1) / scale[:, None]
        r = self.out(self.body(feats))
        return torch.complex(r[:, 0], r[:, 1]) * scale

    def card(self) -> dict:
        return {"arch": "DeGLI", "audio": self.audio.to_dict(), "model": asdict(self.hparams)}


def block(net: DeGLINet, x: torch.Tensor, mag: torch.Tensor, pair: FramePair) -> torch.Tensor:
    y = x * (mag / x.abs().add(EPS))
    z = pair.stft(pair.istft(y))
    return z - net(x, y, z)


@torch.inference_mode()
def degli(mag: torch.Tensor, lengths: torch.Tensor, cfg: AudioConfig, n_iter: int = 10, *,
          model: DeGLINet | None = None, weights: str | None = None, init="zeros",
          generator=None, pair: FramePair | None = None, **_) -> tuple[torch.Tensor, FramePair]:
    """``n_iter`` DeGLI blocks from ``init``; returns padded waveforms and the frame pair."""
    if model is None:
        from ..weights import load_degli
        model = load_degli(weights, cfg, mag.device)
    if pair is None:
        pair = FramePair(cfg, mag.shape[1], lengths, mag.device, mag.dtype)
    x = mag * (initial_phase(mag, init, generator, cfg) if isinstance(init, str) else init)
    for _ in range(n_iter):
        x = block(model, x, mag, pair)
    return pair.istft(x * (mag / x.abs().add(EPS))), pair


# ------------------------------------------------------------------------------ training


@dataclass
class DeGLITrainConfig:
    epochs: int = 12
    steps_per_epoch: int = 100
    batch_size: int = 8
    seconds: float = 1.0
    lr: float = 1e-3
    snr_db: tuple[float, float] = (-6.0, 12.0)
    max_utterances: int = 1500
    seed: int = 0


def _load_waves(store, limit: int, min_samples: int, gen: torch.Generator) -> list[np.ndarray]:
    from ..audio import load
    entries = [e for e in store.all_entries() if e.n_samples >= min_samples]
    pick = torch.randperm(len(entries), generator=gen)[:limit].tolist()
    return [load(entries[i].source, store.config.sample_rate) for i in sorted(pick)]


def _noisy(S: torch.Tensor, snr_db: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    power = S.abs().pow(2).mean(dim=(-2, -1), keepdim=True)
    sigma = (power / 10 ** (snr_db[:, None, None] / 10)).sqrt()
    noise = torch.complex(torch.randn(S.shape, generator=gen), torch.randn(S.shape, generator=gen))
    return S + sigma * noise / math.sqrt(2)


def train_degli(train_store: str | Path, val_store: str | Path, out: str | Path,
                tc: DeGLITrainConfig = DeGLITrainConfig(), hp: DeGLIConfig = DeGLIConfig(),
                progress: bool = True) -> dict:
    """Train the residual net on true STFTs of the stores' source audio; export the best."""
    from .. import weights as W
    from ..parallel import progress_bar
    from ..store import Store

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tr, va = Store(train_store), Store(val_store)
    cfg = tr.config
    gen = torch.Generator().manual_seed(tc.seed)
    n = int(tc.seconds * cfg.sample_rate)
    waves = _load_waves(tr, tc.max_utterances, n, gen)
    vwaves = _load_waves(va, 32, n, torch.Generator().manual_seed(1))
    T = cfg.n_frames(n)
    lengths = torch.full((tc.batch_size,), n)
    pair = FramePair(cfg, T, lengths)
    vpair = FramePair(cfg, T, torch.full((len(vwaves),), n))
    net = DeGLINet(cfg, hp)
    opt = torch.optim.Adam(net.parameters(), lr=tc.lr)

    def spec(batch: list[np.ndarray], p: FramePair) -> torch.Tensor:
        y = torch.from_numpy(np.stack(batch))
        pad = p.pad
        y = torch.nn.functional.pad(y, (pad, p.length - pad - n))
        return p.stft(y)

    vS = spec([w[:n] for w in vwaves], vpair)
    vsnr = torch.linspace(tc.snr_db[0], tc.snr_db[1], len(vwaves))
    vX = _noisy(vS, vsnr, torch.Generator().manual_seed(2))

    def val_loss() -> float:
        with torch.inference_mode():
            return float((block(net, vX, vS.abs(), vpair) - vS).abs().mean() / vS.abs().mean())

    history, best = [], (float("inf"), -1)
    base = val_loss()   # zero-initialised output layer: this is plain GLA's error
    t0 = time.perf_counter()
    with progress_bar(disable=not progress) as bar:
        task = bar.add_task("train degli", total=tc.epochs)
        for epoch in range(tc.epochs):
            losses = []
            for _ in range(tc.steps_per_epoch):
                idx = torch.randint(len(waves), (tc.batch_size,), generator=gen).tolist()
                batch = []
                for i in idx:
                    w = waves[i]
                    s = int(torch.randint(len(w) - n + 1, (1,), generator=gen))
                    batch.append(w[s:s + n])
                S = spec(batch, pair)
                snr = torch.empty(tc.batch_size).uniform_(*tc.snr_db, generator=gen)
                X = _noisy(S, snr, gen)
                loss = (block(net, X, S.abs(), pair) - S).abs().mean() / S.abs().mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
            v = val_loss()
            history.append({"epoch": epoch, "train": float(np.mean(losses)), "val": v,
                            "seconds": time.perf_counter() - t0})
            if v < best[0]:
                best = (v, epoch)
                torch.save(net.state_dict(), out / "best.pt")
            (out / "history.json").write_text(json.dumps(history, indent=1))
            bar.update(task, advance=1, description=f"train degli (val {v:.4f}, GLA {base:.4f})")
    state = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    card = {**net.card(), "trained_on": str(train_store), "validated_on": str(val_store),
            "train": {k: v for k, v in asdict(tc).items()}, "best_epoch": best[1],
            "validation": {"relative_l1": best[0], "plain_gla_block_relative_l1": base},
            "train_seconds": history[-1]["seconds"] if history else 0}
    W.save(state, card, out / f"{out.name}.pt")
    return card
