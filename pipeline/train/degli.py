"""Training the DeGLI residual net (``pipeline train degli``): on FGLA iterates of true STFTs
(the stores' source audio), loss = the inconsistency GLA itself minimises; see
:mod:`pipeline.models.degli` for the net and the departures from the paper."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from pipeline.algorithms.gla import initial_phase, iterate, project
from pipeline.dsp.mel import mel_from_magnitude
from pipeline.dsp.spectral import spectral_convergence
from pipeline.dsp.stft import FramePair
from pipeline.errors import UsageError
from pipeline.io.audio import load
from pipeline.io.store import Store
from pipeline.models.degli import DeGLIConfig, DeGLINet, run_blocks
from pipeline.models.inverter import inverter_digest, load_invert_model
from pipeline.train.invert import loss_fn
from pipeline.train.trainer import LoopConfig, Trainer


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
    entries = [e for e in store.all_entries() if e.n_samples >= min_samples]
    pick = torch.randperm(len(entries), generator=gen)[:limit].tolist()
    return [load(entries[i].source, store.config.sample_rate) for i in sorted(pick)]


def _loss(net, X, mag, true_mag, pair) -> torch.Tensor:
    """Phase only (``mag`` is the truth): spectral convergence of the block's output after
    amplitude projection and re-analysis, ``|| |STFT(ISTFT(P_A(out)))| - |S| || / || |S| ||``,
    the inconsistency GLA itself minimises. It needs no true phase: a loss against the true
    STFT cannot tell ``s`` from a shifted or sign-flipped but equally good signal, and a net
    trained on it loses speech quality while its loss falls.

    After the inverter (``mag`` an estimate): the output is not projected, and the loss is
    the inverter's own (L1 of floored logs + SC) between its re-analysed magnitude and the
    true one."""
    out = run_blocks(net, X, mag, pair, 1)
    if net.hparams.magnitude == "true":
        return spectral_convergence(reference=true_mag, estimate=pair.stft(pair.istft(project(out, mag))).abs(),
                                    dim=None, eps=1e-8)
    again = pair.stft(pair.istft(out)).abs()
    return loss_fn(again.clamp_min(1e-12).log(), true_mag)


def _unrolled_loss(net, X, mag, pair, n) -> torch.Tensor:
    """Phase only, ``n`` chained blocks (``run_blocks``, the net's momentum): the mean over
    the blocks of the inconsistency of each block's output (as the next block, or one more
    consistency projection after the last, measures it): the whole chain is pulled toward
    consistency, not one step from a point GLA has already made stationary."""
    inc: list = []
    x = run_blocks(net, X, mag, pair, n, inconsistency=inc)
    inc.append(spectral_convergence(reference=mag, estimate=pair.stft(pair.istft(project(x, mag))).abs(),
                                    dim=None, eps=1e-8))
    return torch.stack(inc[1:]).mean()


def _objective(net, X, mag, true_mag, pair, unroll: int) -> torch.Tensor:
    if unroll > 1:
        if net.hparams.magnitude != "true":
            raise UsageError("unrolled DeGLI training is implemented for true magnitudes only")
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
                tc: DeGLITrainConfig | None = None, hp: DeGLIConfig | None = None,
                progress: bool = True) -> dict:
    """Train the residual net on FGLA iterates of true STFTs (the stores' source audio);
    early stopping on validation (FGLA ``hp.warmup`` iterates); export the best epoch. The loop
    (checkpoints, resume, refusal of changed settings) is :class:`pipeline.train.trainer.Trainer`."""
    tc, hp = tc or DeGLITrainConfig(), hp or DeGLIConfig()
    tr, va = Store(train_store), Store(val_store)
    cfg = tr.config
    gen = torch.Generator().manual_seed(tc.seed)
    n = int(tc.seconds * cfg.sample_rate)
    waves = _load_waves(tr, tc.max_utterances, n, gen)
    vwaves = _load_waves(va, 32, n, torch.Generator().manual_seed(1))
    if not waves or not vwaves:
        raise UsageError(f"no utterance of >= {tc.seconds} s in {train_store} or {val_store}")
    T = cfg.n_frames(n)
    pair = FramePair(cfg, T, torch.full((tc.batch_size,), n))
    vpair = FramePair(cfg, T, torch.full((len(vwaves),), n))
    if tc.unroll > 1 and not hp.horizon:   # the net acts where it was trained: a chain of unroll
        hp = replace(hp, horizon=tc.unroll)
    with torch.random.fork_rng():      # the initial weights follow tc.seed, not the caller's RNG
        torch.manual_seed(tc.seed)
        net = DeGLINet(cfg, hp)
    if hp.magnitude == "model":
        inverter = load_invert_model(hp.invert_weights, cfg)
        for q in inverter.parameters():
            q.requires_grad_(False)

        def known(S: torch.Tensor) -> torch.Tensor:
            """What inference will see: the inverter's magnitude from the mel of ``S``."""
            with torch.no_grad():
                mel = mel_from_magnitude(S.abs().transpose(1, 2), cfg).transpose(1, 2)
                return inverter.magnitude(mel)
    elif hp.magnitude == "true":
        def known(S: torch.Tensor) -> torch.Tensor:
            return S.abs()
    else:
        raise UsageError(f"unknown DeGLI magnitude {hp.magnitude!r}: 'true' or 'model'")

    def spec(batch: list[np.ndarray], p: FramePair) -> torch.Tensor:
        y = torch.nn.functional.pad(torch.from_numpy(np.stack(batch)), (p.pad, p.length - p.pad - n))
        return p.stft(y)

    def start(mag: torch.Tensor, p: FramePair, k: int, init: str, g: torch.Generator) -> torch.Tensor:
        with torch.no_grad():
            return iterate(mag * initial_phase(mag, init, g, cfg), mag, p, k)

    vS = spec([w[:n] for w in vwaves], vpair)
    vM = known(vS)
    vX = start(vM, vpair, hp.warmup, "zeros", gen)

    def validate(model: DeGLINet) -> dict:
        with torch.inference_mode():
            return {"loss": float(_objective(model, vX, vM, vS.abs(), vpair, tc.unroll))}

    base = validate(net)["loss"]   # zero-initialised output layer: one more plain GLA iteration
    lo, hi = tc.warmup_range

    def step(g: torch.Generator) -> torch.Tensor:
        """Random one-second crops, FGLA iterates from a random start, the net's loss."""
        idx = torch.randint(len(waves), (tc.batch_size,), generator=g).tolist()
        batch = []
        for i in idx:
            w = waves[i]
            s = int(torch.randint(len(w) - n + 1, (1,), generator=g))
            batch.append(w[s:s + n])
        S = spec(batch, pair)
        k = int(torch.randint(lo, hi + 1, (1,), generator=g))
        init = tc.inits[int(torch.randint(len(tc.inits), (1,), generator=g))]
        M = known(S)
        return _objective(net, start(M, pair, k, init, g), M, S.abs(), pair, tc.unroll)

    loop = LoopConfig(epochs=tc.epochs, steps_per_epoch=tc.steps_per_epoch, lr=tc.lr,
                      patience=tc.patience, seed=tc.seed)
    trainer = Trainer(net, out, loop, {"model": asdict(hp), "train": {**asdict(tc), "epochs": None}},
                      label="train degli", gen=gen)   # it drew the training utterances
    fitted = trainer.fit(step, validate, progress)  # type: ignore[arg-type]
    card = {**net.card(), "trained_on": str(train_store), "validated_on": str(val_store),
            "train": asdict(tc), "best_epoch": fitted.best_epoch,
            "validation": {"loss": fitted.best.get("loss"), "plain_gla_block_loss": base,
                           "beats_zero_residual": bool(fitted.best.get("loss", base) < base),
                           "what": _validation_what(hp, tc)},
            "train_seconds": fitted.seconds}
    if hp.magnitude == "model":   # which inverter exactly: a retrained one needs a new net
        card["invert_weights_sha256"] = inverter_digest(hp.invert_weights or "")
    trainer.export(card)
    return card
