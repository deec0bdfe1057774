"""Training the mel inverter on stores written by ``pipeline extract --with-mag``.

Random crops of ``crop`` frames from the training store, L1 on log-magnitude plus spectral
convergence, validated on whole utterances; the loop (AdamW, cosine schedule, weight average,
checkpoints, resume, early stopping, export) is :class:`pipeline.train.trainer.Trainer`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.algorithms.invert import nnls, pinv
from pipeline.config import AudioConfig
from pipeline.dsp.spectral import log_spectral_distance, spectral_convergence
from pipeline.errors import UsageError
from pipeline.io import weights as W
from pipeline.io.store import Store
from pipeline.models.inverter import ModelConfig, PInvConvSkip, load_invert_model, low_band_net
from pipeline.train.trainer import LoopConfig, Trainer


@dataclass
class TrainConfig:
    epochs: int = 40
    steps_per_epoch: int = 100
    batch_size: int = 32
    crop: int = 64
    lr: float = 2e-3
    patience: int = 6
    seed: int = 0
    threads: int = 0   # 0: all cores
    loss_floor: float = 1e-2   # log(mag + floor): errors far below audibility count little
    ema: float = 0.998   # validated and exported: an exponential moving average of the weights
    over_weight: float = 1.0   # log errors above the truth weigh this much more than below
    init: str = ""   # a fine-tune: start from these weights, in their architecture


def load_frames(store: Store, min_frames: int) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]], list[str]]:
    """All mel / true magnitude frames of a store, concatenated, and (start, n) per utterance."""
    mels, mags, spans, ids, offset = [], [], [], [], 0
    for s in store.shard_names():
        mel, mag = store.read_array(s, "mel"), store.read_array(s, "mag_true")
        mels.append(mel)
        mags.append(mag)
        for e in store.entries(s):
            if e.n_frames >= min_frames:
                spans.append((offset + e.offset, e.n_frames))
                ids.append(e.id)
        offset += mel.shape[0]
    return np.concatenate(mels), np.concatenate(mags), spans, ids


def log_l1(pred: torch.Tensor, mag: torch.Tensor, floor: float = 1e-2,
           over: float = 1.0) -> torch.Tensor:
    """Per-bin L1 between log(magnitude + floor) (compressed, floored where nothing is
    audible); with ``over`` != 1 an asymmetric L1 (a quantile loss): errors above the truth
    weigh ``over`` times those below, scaled so that the mean weight stays 1. Where the mel
    leaves a bin uncertain (a harmonic or the gap beside it) the L1's median fills the gaps;
    a lower quantile keeps them deeper, and FGLA's speech is cleaner for it."""
    e = (pred + floor).log() - (mag + floor).log()
    if over == 1.0:
        return e.abs()
    return torch.where(e > 0, over * e, -e) * (2 / (1 + over))


def loss_fn(log_pred: torch.Tensor, mag: torch.Tensor, floor: float = 1e-2,
            over: float = 1.0) -> torch.Tensor:
    """:func:`log_l1` (mean) plus the spectral convergence of the linear magnitudes
    (dominated by the loud bins)."""
    pred = log_pred.exp()
    l1 = log_l1(pred, mag, floor, over).mean()
    # over the whole batch: a silent crop (digital silence in a recording) must not divide by ~0
    sc = spectral_convergence(reference=mag, estimate=pred, dim=None, eps=1e-6)
    return l1 + sc


class CropSampler:
    """Random crops of ``crop`` frames from frames loaded by :func:`load_frames`: utterances
    drawn in proportion to their length (with replacement), a uniform offset in each."""

    def __init__(self, mel: np.ndarray, mag: np.ndarray, spans, crop: int):
        self.mel, self.mag, self.crop = mel, mag, crop
        self.lengths = torch.tensor([n for _, n in spans], dtype=torch.float64)
        self.starts = torch.tensor([s for s, _ in spans])

    def __call__(self, gen: torch.Generator, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(mel ``[B, crop, M]``, true magnitude ``[B, crop, F]``)."""
        pick = torch.multinomial(self.lengths, batch_size, replacement=True, generator=gen)
        room = self.lengths[pick] - self.crop + 1
        off = (torch.rand(len(pick), generator=gen, dtype=torch.float64) * room).long()
        idx = ((self.starts[pick] + off)[:, None] + torch.arange(self.crop)[None, :]).numpy()
        return torch.from_numpy(self.mel[idx]), torch.from_numpy(self.mag[idx])


def _batches(spans, n_items: int, batch_size: int):
    for i in range(0, n_items, batch_size):
        yield spans[i:i + batch_size]


def stack_utterances(mel: np.ndarray, mag: np.ndarray, spans, floor: float):
    """Pad a list of utterances to ``[B, T, *]``: mel with its floor, magnitude with 0."""
    T = max(n for _, n in spans)
    B = len(spans)
    m = np.full((B, T, mel.shape[1]), floor, np.float32)
    g = np.zeros((B, T, mag.shape[1]), np.float32)
    for i, (s, n) in enumerate(spans):
        m[i, :n], g[i, :n] = mel[s:s + n], mag[s:s + n]
    return torch.from_numpy(m), torch.from_numpy(g)


@torch.inference_mode()
def evaluate(model_or_method, cfg: AudioConfig, mel: np.ndarray, mag: np.ndarray, spans,
             batch_size: int = 16, floor: float = 1e-2, over: float = 1.0) -> dict[str, float]:
    """Mean loss (the training loss's :func:`log_l1`, ``floor`` and ``over`` as in training),
    spectral convergence and LSD over whole utterances (padding excluded)."""
    mel_floor = math.log(cfg.clamp) if cfg.log == "ln" else float(mel.min())
    order = sorted(range(len(spans)), key=lambda i: spans[i][1])
    spans = [spans[i] for i in order]
    sc, lsd, l1 = [], [], []
    err2 = ref2 = 0.0
    def estimate(m: torch.Tensor) -> torch.Tensor:
        """The magnitude: a net's output is a log-magnitude, a method's the magnitude."""
        if callable(getattr(model_or_method, "forward", None)):
            return model_or_method(m).exp()
        return model_or_method(m, cfg)

    for chunk in _batches(spans, len(spans), batch_size):
        m, g = stack_utterances(mel, mag, chunk, mel_floor)
        est = estimate(m)
        for i, (_, n) in enumerate(chunk):
            ref, e = g[i, :n], est[i, :n]
            l1.append(float(log_l1(e, ref, floor, over).mean()))
            err2 += float((e - ref).pow(2).sum())
            ref2 += float(ref.pow(2).sum())
            if ref.pow(2).mean().sqrt() > 1e-4:   # near-silent recordings: SC is ill-conditioned
                sc.append(float(spectral_convergence(reference=ref, estimate=e)))
                lsd.append(float(log_spectral_distance(reference=ref, estimate=e)))
    corpus_sc = math.sqrt(err2 / max(ref2, 1e-12))
    # The selection loss: mean L1 of floored logs + mean per-utterance SC, each capped at 1.
    # Not the corpus-level SC: one loud, clipped file made 97 % of its error (measured).
    # Not the raw per-utterance mean: near-silent files (excluded above) make it explode.
    capped = float(np.mean(np.minimum(sc, 1.0))) if sc else corpus_sc
    out = {"loss": float(np.mean(l1)) + capped, "sc": float(np.mean(sc)),
           "lsd_db": float(np.mean(lsd)), "corpus_sc": corpus_sc}
    return out


def with_low_band(model: PInvConvSkip, mc: ModelConfig, seed: int = 0) -> PInvConvSkip:
    """``model`` (trained) with a new low-band 2-D net of ``mc``'s shape after it, initialised
    from ``seed``; only the new net trains (the rest frozen: a stage on top of a trained
    inverter)."""
    hp = replace(model.hparams, **{k: v for k, v in asdict(mc).items() if k.startswith("lowband")})
    new = PInvConvSkip(model.audio, hp)
    with torch.random.fork_rng():   # the new net's initial weights follow the seed alone
        torch.manual_seed(seed)
        new.low = low_band_net(model.audio, hp)
    missing, unexpected = new.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("low.") for k in missing), (missing, unexpected)
    for name, p in new.named_parameters():
        p.requires_grad_(name.startswith("low."))
    return new.train()


def train_invert(train_store: str | Path, val_store: str | Path, out: str | Path,
                 train_cfg: TrainConfig | None = None, model_cfg: ModelConfig | None = None,
                 progress: bool = True, data_note: str = "", keep_epochs: bool = False) -> dict:
    """Train, checkpoint every epoch (resumes from ``out``/checkpoint.pt), export the best.

    ``out`` is a folder for the run (checkpoint, loss_curve.png, history.json) and the final
    weights ``out/<name>.pt`` + ``.json`` where name is the folder's name. ``keep_epochs``:
    also every epoch's weights, ``out/epochs/<name>-eNNN.pt`` + card (loadable as the
    final ones are), to choose an epoch by another measure than the validation loss.
    """
    tc, mc = train_cfg or TrainConfig(), model_cfg or ModelConfig()
    tr, va = Store(train_store), Store(val_store)
    cfg = tr.config
    va.check_config(cfg, f"the training store {train_store}")
    mel, mag, spans, _ = load_frames(tr, tc.crop)
    vmel, vmag, vspans, _ = load_frames(va, 1)
    if not spans:
        raise UsageError(f"{train_store}: no utterance has >= {tc.crop} frames")
    if tc.init:   # a fine-tune: the architecture is the weights'; ``refine`` is this run's
        model = load_invert_model(tc.init, cfg).train()
        model.hparams = replace(model.hparams, refine=mc.refine)
        if mc.lowband and not model.hparams.lowband:
            model = with_low_band(model, mc, tc.seed)
        mc = model.hparams
    else:
        with torch.random.fork_rng():   # the initial weights follow the seed, not the caller's RNG
            torch.manual_seed(tc.seed)
            model = PInvConvSkip(cfg, mc)
    loop = LoopConfig(epochs=tc.epochs, steps_per_epoch=tc.steps_per_epoch, lr=tc.lr,
                      weight_decay=1e-4, schedule="cosine", ema=tc.ema, patience=tc.patience,
                      seed=tc.seed, threads=tc.threads)
    # a checkpoint written before an option existed resumes with it at its default
    trainer = Trainer(model, out, loop, {"model": asdict(mc), "train": {**asdict(tc), "epochs": None},
                                         "store": str(train_store)}, label="train invert",
                      defaults={"model": asdict(ModelConfig()), "train": asdict(TrainConfig())})
    fl = tc.loss_floor
    ov = tc.over_weight
    baselines = {"pinv": evaluate(pinv, cfg, vmel, vmag, vspans, floor=fl, over=ov),
                 "nnls": evaluate(nnls, cfg, vmel, vmag, vspans, floor=fl, over=ov)}
    crops = CropSampler(mel, mag, spans, tc.crop)

    def step(gen: torch.Generator) -> torch.Tensor:
        """A batch of random crops (utterances drawn by length), the loss of the model on it."""
        m, g = crops(gen, tc.batch_size)
        return loss_fn(model(m), g, fl, ov)

    data_note = data_note or (f"{len(spans)} utterances of {tr.root.attrs.get('source')} "
                              f"({mel.shape[0] * cfg.hop_length / cfg.sample_rate / 60:.0f} min)")
    common = {**model.card(), "trained_on": str(train_store), "validated_on": str(val_store),
              "data": data_note, "train": asdict(tc), "validation_baselines": baselines}

    def keep(epoch: int, net: nn.Module, val: dict) -> None:
        # float16 on disk, as the final export
        W.save(net.state_dict(), {**common, "epoch": epoch, "validation": val},
               trainer.out / "epochs" / f"{trainer.out.name}-e{epoch:03d}.pt", half=True)

    fitted = trainer.fit(step, lambda net: evaluate(net, cfg, vmel, vmag, vspans, floor=fl, over=ov),
                         progress,
                         on_epoch=keep if keep_epochs else None)
    card = {**common, "best_epoch": fitted.best_epoch, "epochs_run": len(fitted.history),
            "validation": fitted.best, "train_seconds": fitted.seconds}
    # float16 on disk keeps the shipped files a few MB (cast back to float32 when loaded)
    trainer.export(card, half=True)
    return card
