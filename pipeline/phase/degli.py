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

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import AudioConfig
from ..weights import WeightsError, load_state, pick_for
from .gla import initial_phase, iterate, project
from .stft import FramePair

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
        nn.init.zeros_(self.out.bias)   # starts as plain GLA

    def forward(self, x, y, z, mag):
        ref = mag.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-8)
        m = mag + REL_FLOOR * ref
        rel = [t / m for t in (x.real, x.imag, y.real, y.imag, z.real, z.imag)]
        feats = torch.stack([*rel, (m / ref).log() / 5], 1).clamp(-FEATURE_CLIP, FEATURE_CLIP)
        r = self.out(self.body(feats))
        return torch.complex(r[:, 0], r[:, 1]) * m

    def card(self) -> dict:
        return {"arch": "DeGLI", "audio": self.audio.to_dict(), "model": asdict(self.hparams)}


def _sc(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Spectral convergence over the whole batch (one number: a near-silent crop cannot
    dominate it), unlike the per-item ``specmetrics.spectral_convergence``."""
    return (torch.linalg.vector_norm(estimate - reference)
            / torch.linalg.vector_norm(reference).clamp_min(1e-8))


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
        y = project(x, mag)
        z = pair.stft(pair.istft(y))
        if inconsistency is not None:
            inconsistency.append(_sc(z.abs(), mag))
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
          momentum: float = 0.99, **_) -> tuple[torch.Tensor, FramePair]:
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


# ------------------------------------------------------------------------------ training


@dataclass
class DeGLITrainConfig:
    epochs: int = 30
    steps_per_epoch: int = 100
    batch_size: int = 8
    seconds: float = 1.0
    lr: float = 1e-3
    warmup_range: tuple[int, int] = (20, 200)   # FGLA iterations before the trained block
    max_utterances: int = 1500
    patience: int = 8
    seed: int = 0
    unroll: int = 1     # blocks per training example; > 1: loss over the unrolled chain
    inits: tuple[str, ...] = ("random", "zeros")   # initial phases of the training iterates


def _load_waves(store, limit: int, min_samples: int, gen: torch.Generator) -> list[np.ndarray]:
    from ..audio import load
    entries = [e for e in store.all_entries() if e.n_samples >= min_samples]
    pick = torch.randperm(len(entries), generator=gen)[:limit].tolist()
    return [load(entries[i].source, store.config.sample_rate) for i in sorted(pick)]


def _loss(net, X, mag, true_mag, pair) -> torch.Tensor:
    """Phase only (``mag`` is the truth): spectral convergence of the block's output after
    amplitude projection and re-analysis, ``|| |STFT(ISTFT(P_A(out)))| - |S| || / || |S| ||``,
    the inconsistency GLA itself minimises. It needs no true phase: a loss against the true
    STFT (tried first) cannot tell ``s`` from a shifted or sign-flipped but equally good
    signal; that net lowered its L1 by 8 % while validation PESQ fell from 4.31 to 3.81.

    After the inverter (``mag`` an estimate): the output is not projected, and the loss is
    the inverter's own (L1 of floored logs + SC) between its re-analysed magnitude and the
    true one."""
    out = run_blocks(net, X, mag, pair, 1)
    if net.hparams.magnitude == "true":
        return _sc(pair.stft(pair.istft(project(out, mag))).abs(), true_mag)
    from ..invert.train import loss_fn
    again = pair.stft(pair.istft(out)).abs()
    return loss_fn(again.clamp_min(1e-12).log(), true_mag)


def _unrolled_loss(net, X, mag, pair, n) -> torch.Tensor:
    """Phase only, ``n`` chained blocks (``run_blocks``, the net's momentum): the mean over
    the blocks of the inconsistency of each block's output (as the next block, or one more
    consistency projection after the last, measures it): the whole chain is pulled toward
    consistency, not one step from a point GLA has already made stationary."""
    inc: list = []
    x = run_blocks(net, X, mag, pair, n, inconsistency=inc)
    inc.append(_sc(pair.stft(pair.istft(project(x, mag))).abs(), mag))
    return torch.stack(inc[1:]).mean()


def _objective(net, X, mag, true_mag, pair, unroll: int) -> torch.Tensor:
    if unroll > 1:
        if net.hparams.magnitude != "true":
            raise ValueError("unrolled DeGLI training is implemented for true magnitudes only")
        return _unrolled_loss(net, X, mag, pair, unroll)
    return _loss(net, X, mag, true_mag, pair)


def _validation_what(hp: DeGLIConfig, tc: DeGLITrainConfig) -> str:
    crops = f"FGLA-{hp.warmup} iterates of 32 one-second validation crops"
    if tc.unroll > 1:
        return (f"mean inconsistency (SC) over {tc.unroll} chained blocks (momentum "
                f"{hp.momentum}) on {crops}")
    if hp.magnitude == "true":
        return f"spectral convergence after one block on {crops}"
    return (f"L1 of floored logs + SC vs the true magnitude after one block on {crops} "
            f"({hp.invert_weights}'s magnitudes)")


def train_degli(train_store: str | Path, val_store: str | Path, out: str | Path,
                tc: DeGLITrainConfig = DeGLITrainConfig(), hp: DeGLIConfig = DeGLIConfig(),
                progress: bool = True) -> dict:
    """Train the residual net on FGLA iterates of true STFTs (the stores' source audio);
    early stopping on validation (FGLA ``hp.warmup`` iterates); export the best epoch.

    Checkpoints every epoch (``out``/checkpoint.pt: net, optimiser, sampling RNG, history):
    re-running with the same settings resumes where it stopped and ends with the weights of
    an uninterrupted run; a different ``--epochs`` extends or shortens it."""
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
    if not waves or not vwaves:
        raise ValueError(f"no utterance of >= {tc.seconds} s in {train_store} or {val_store}")
    T = cfg.n_frames(n)
    pair = FramePair(cfg, T, torch.full((tc.batch_size,), n))
    vpair = FramePair(cfg, T, torch.full((len(vwaves),), n))
    if tc.unroll > 1 and not hp.horizon:   # the net acts where it was trained: a chain of unroll
        hp = replace(hp, horizon=tc.unroll)
    with torch.random.fork_rng():      # the initial weights follow tc.seed, not the caller's RNG
        torch.manual_seed(tc.seed)
        net = DeGLINet(cfg, hp)
    opt = torch.optim.Adam(net.parameters(), lr=tc.lr)
    if hp.magnitude == "model":
        from ..invert.model import load_invert_model
        from ..mel import mel_from_magnitude
        inverter = load_invert_model(hp.invert_weights, cfg)
        for q in inverter.parameters():
            q.requires_grad_(False)

        def known(S: torch.Tensor) -> torch.Tensor:
            """What inference will see: the inverter's magnitude from the mel of ``S``."""
            with torch.no_grad():
                mel = mel_from_magnitude(S.abs().transpose(1, 2), cfg).transpose(1, 2)
                return inverter(mel).exp()
    elif hp.magnitude == "true":
        def known(S: torch.Tensor) -> torch.Tensor:
            return S.abs()
    else:
        raise ValueError(f"unknown DeGLI magnitude {hp.magnitude!r}: 'true' or 'model'")

    def spec(batch: list[np.ndarray], p: FramePair) -> torch.Tensor:
        y = torch.nn.functional.pad(torch.from_numpy(np.stack(batch)), (p.pad, p.length - p.pad - n))
        return p.stft(y)

    def start(mag: torch.Tensor, p: FramePair, k: int, init: str, g: torch.Generator) -> torch.Tensor:
        with torch.no_grad():
            return iterate(mag * initial_phase(mag, init, g, cfg), mag, p, k)

    vS = spec([w[:n] for w in vwaves], vpair)
    vM = known(vS)
    vX = start(vM, vpair, hp.warmup, "zeros", gen)

    def val_loss() -> float:
        with torch.inference_mode():
            return float(_objective(net, vX, vM, vS.abs(), vpair, tc.unroll))

    history, best = [], (float("inf"), -1)
    base = val_loss()   # zero-initialised output layer: one more plain GLA iteration
    ckpt_path = out / "checkpoint.pt"
    settings = json.dumps({"model": asdict(hp), "train": {**asdict(tc), "epochs": None}},
                          sort_keys=True, default=str)
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if ck["settings"] != settings:
            raise ValueError(f"{ckpt_path} was written by a run with other settings; resume "
                             "with the same options, or use a new --out folder")
        net.load_state_dict(ck["net"])
        opt.load_state_dict(ck["opt"])
        gen.set_state(ck["gen"])
        history, best = json.loads(ck["history"]), tuple(json.loads(ck["best"]))
    done_s = history[-1]["seconds"] if history else 0.0
    t0 = time.perf_counter()
    lo, hi = tc.warmup_range
    with progress_bar(disable=not progress) as bar:
        task = bar.add_task("train degli", total=tc.epochs, completed=len(history))
        for epoch in range(len(history), tc.epochs):
            if epoch - best[1] > tc.patience:
                break   # a resumed run that had already stopped early
            losses = []
            for _ in range(tc.steps_per_epoch):
                idx = torch.randint(len(waves), (tc.batch_size,), generator=gen).tolist()
                batch = []
                for i in idx:
                    w = waves[i]
                    s = int(torch.randint(len(w) - n + 1, (1,), generator=gen))
                    batch.append(w[s:s + n])
                S = spec(batch, pair)
                k = int(torch.randint(lo, hi + 1, (1,), generator=gen))
                init = tc.inits[int(torch.randint(len(tc.inits), (1,), generator=gen))]
                M = known(S)
                loss = _objective(net, start(M, pair, k, init, gen), M, S.abs(), pair,
                                  tc.unroll)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
                losses.append(loss.item())
            v = val_loss()
            history.append({"epoch": epoch, "train": float(np.mean(losses)), "val": v,
                            "plain_gla_block": base,
                            "seconds": done_s + time.perf_counter() - t0})
            if v < best[0]:
                best = (v, epoch)
                W.save_atomic(net.state_dict(), out / "best.pt")
            W.save_atomic({"net": net.state_dict(), "opt": opt.state_dict(),
                           "gen": gen.get_state(), "history": json.dumps(history),
                           "best": json.dumps(best), "settings": settings}, ckpt_path)
            (out / "history.json").write_text(json.dumps(history, indent=1))
            bar.update(task, advance=1, description=f"train degli (val {v:.4f}, GLA {base:.4f})")
            if epoch - best[1] >= tc.patience:
                break
    state = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    card = {**net.card(), "trained_on": str(train_store), "validated_on": str(val_store),
            "train": asdict(tc), "best_epoch": best[1],
            "validation": {"loss": best[0], "plain_gla_block_loss": base,
                           "beats_zero_residual": bool(best[0] < base),
                           "what": _validation_what(hp, tc)},
            "train_seconds": history[-1]["seconds"] if history else 0}
    if hp.magnitude == "model":   # which inverter exactly: a retrained one needs a new net
        card["invert_weights_sha256"] = W.read_card(W.resolve(hp.invert_weights))["sha256"]
    W.save(state, card, out / f"{out.name}.pt")
    return card
