"""Training the mel inverter on stores written by ``pipeline extract --with-mag``.

Random crops of ``crop`` frames from the training store, Adam, L1 on log-magnitude plus
spectral convergence. Every epoch: validation on whole utterances, a checkpoint (model,
optimiser, history; resumed automatically), the loss curve PNG; early stopping when the
validation loss has not improved for ``patience`` epochs. The best epoch is exported as
weights + model card.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import AudioConfig
from ..parallel import progress_bar
from ..specmetrics import log_spectral_distance, spectral_convergence
from ..store import Store
from .. import weights as W
from .methods import nnls, pinv
from .model import LOG_FLOOR, ModelConfig, PInvConvSkip


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
    gain_db: float = 0.0   # level augmentation: each crop scaled by a gain uniform in +-gain_db


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


def loss_fn(log_pred: torch.Tensor, mag: torch.Tensor, floor: float = 1e-2) -> torch.Tensor:
    """L1 between log(mag + floor) (compressed, floored where nothing is audible) plus the
    spectral convergence of the linear magnitudes (dominated by the loud bins)."""
    pred = log_pred.exp()
    l1 = ((pred + floor).log() - (mag + floor).log()).abs().mean()
    # over the whole batch: a silent crop (digital silence in a recording) must not divide by ~0
    sc = torch.linalg.vector_norm(pred - mag) / torch.linalg.vector_norm(mag).clamp_min(1e-6)
    return l1 + sc


def level_augment(mel: torch.Tensor, mag: torch.Tensor, cfg: AudioConfig, gain_db: float,
                  gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale each crop's audio by a random gain (uniform in dB): the magnitude by ``a``, the
    mel recomputed from its linear form (power ``a**p``, clamp and log of the config)."""
    from ..mel import compress, decompress
    db = (torch.rand(mel.shape[0], 1, 1, generator=gen) * 2 - 1) * gain_db
    a = 10 ** (db / 20)
    return compress(decompress(mel, cfg) * a ** cfg.power, cfg), mag * a


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
             batch_size: int = 16, floor: float = 1e-2) -> dict[str, float]:
    """Mean loss, spectral convergence and LSD over whole utterances (padding excluded)."""
    mel_floor = math.log(cfg.clamp) if cfg.log == "ln" else float(mel.min())
    order = sorted(range(len(spans)), key=lambda i: spans[i][1])
    spans = [spans[i] for i in order]
    sc, lsd, l1 = [], [], []
    err2 = ref2 = 0.0
    for chunk in _batches(spans, len(spans), batch_size):
        m, g = stack_utterances(mel, mag, chunk, mel_floor)
        if callable(getattr(model_or_method, "forward", None)):
            logp = model_or_method(m)
            est = logp.exp()
        else:
            est = model_or_method(m, cfg)
        for i, (_, n) in enumerate(chunk):
            ref, e = g[i, :n], est[i, :n]
            l1.append(float(((e + floor).log() - (ref + floor).log()).abs().mean()))
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
    return {"loss": float(np.mean(l1)) + capped, "sc": float(np.mean(sc)),
            "lsd_db": float(np.mean(lsd)), "corpus_sc": corpus_sc}


def plot_curve(history: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ep = [h["epoch"] for h in history]
    ax.plot(ep, [h["train_loss"] for h in history], label="train")
    ax.plot(ep, [h["val"]["loss"] for h in history], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("L1(log mag) + SC")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train_invert(train_store: str | Path, val_store: str | Path, out: str | Path,
                 train_cfg: TrainConfig = TrainConfig(), model_cfg: ModelConfig = ModelConfig(),
                 progress: bool = True, data_note: str = "") -> dict:
    """Train, checkpoint every epoch (resumes from ``out``/checkpoint.pt), export the best.

    ``out`` is a folder for the run (checkpoint, loss_curve.png, history.json) and the final
    weights ``out/<name>.pt`` + ``.json`` where name is the folder's name.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if train_cfg.threads:
        torch.set_num_threads(train_cfg.threads)
    tr, va = Store(train_store), Store(val_store)
    cfg = tr.config
    va.check_config(cfg, f"the training store {train_store}")
    mel, mag, spans, _ = load_frames(tr, train_cfg.crop)
    vmel, vmag, vspans, _ = load_frames(va, 1)
    if not spans:
        raise ValueError(f"{train_store}: no utterance has >= {train_cfg.crop} frames")
    gen = torch.Generator().manual_seed(train_cfg.seed)
    model = PInvConvSkip(cfg, model_cfg)
    # The validation loss of the raw weights jumps by +-10 % from epoch to epoch at this
    # learning rate (measured), so selection on it picked lucky early epochs; the average of
    # the weights over the last few hundred steps is smooth and what gets validated.
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(train_cfg.ema))
    opt = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=train_cfg.epochs)
    ckpt_path = out / "checkpoint.pt"
    history: list[dict] = []
    best = {"val": float("inf"), "epoch": -1}
    start = 0
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        if "ema" in ck:
            ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        gen.set_state(ck["gen"])
        history = json.loads(ck["history"])
        best = json.loads(ck["best"])
        start = len(history)
    fl = train_cfg.loss_floor
    baselines = {"pinv": evaluate(pinv, cfg, vmel, vmag, vspans, floor=fl),
                 "nnls": evaluate(nnls, cfg, vmel, vmag, vspans, floor=fl)}
    lengths = torch.tensor([n for _, n in spans], dtype=torch.float64)
    starts = torch.tensor([s for s, _ in spans])
    crop = train_cfg.crop
    t0 = time.perf_counter()
    with progress_bar(disable=not progress) as bar:
        task = bar.add_task("train invert", total=train_cfg.epochs, completed=start)
        for epoch in range(start, train_cfg.epochs):
            model.train()
            losses = []
            for _ in range(train_cfg.steps_per_epoch):
                pick = torch.multinomial(lengths, train_cfg.batch_size, replacement=True, generator=gen)
                room = (lengths[pick] - crop + 1)
                off = (torch.rand(len(pick), generator=gen, dtype=torch.float64) * room).long()
                idx = (starts[pick] + off)[:, None] + torch.arange(crop)[None, :]
                m = torch.from_numpy(mel[idx.numpy()])
                g = torch.from_numpy(mag[idx.numpy()])
                if train_cfg.gain_db:
                    m, g = level_augment(m, g, cfg, train_cfg.gain_db, gen)
                loss = loss_fn(model(m), g, train_cfg.loss_floor)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                ema.update_parameters(model)
                losses.append(loss.item())
            sched.step()
            net = ema.module if train_cfg.ema else model
            net.eval()
            val = evaluate(net, cfg, vmel, vmag, vspans, floor=fl)
            history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val": val,
                            "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0})
            if val["loss"] < best["val"]:
                best = {"val": val["loss"], "epoch": epoch, "metrics": val}
                W.save_atomic(net.state_dict(), out / "best.pt")
            W.save_atomic({"model": model.state_dict(), "ema": ema.state_dict(),
                           "opt": opt.state_dict(), "sched": sched.state_dict(),
                           "gen": gen.get_state(), "history": json.dumps(history),
                           "best": json.dumps(best)}, ckpt_path)
            plot_curve(history, out / "loss_curve.png")
            (out / "history.json").write_text(json.dumps(history, indent=1))
            bar.update(task, advance=1,
                       description=f"train invert (val {val['loss']:.3f} sc {val['sc']:.3f})")
            if epoch - best["epoch"] >= train_cfg.patience:
                break
    state = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    data_note = data_note or (f"{len(spans)} utterances of {tr.root.attrs.get('source')} "
                              f"({mel.shape[0] * cfg.hop_length / cfg.sample_rate / 60:.0f} min)")
    card = {**model.card(), "trained_on": str(train_store), "validated_on": str(val_store),
            "data": data_note, "train": asdict(train_cfg), "best_epoch": best["epoch"],
            "epochs_run": len(history), "validation": best.get("metrics"),
            "validation_baselines": baselines, "train_seconds": history[-1]["seconds"] if history else 0}
    # float16 on disk keeps the shipped files a few MB (cast back to float32 when loaded)
    W.save(state, card, out / f"{out.name}.pt", half=True)
    return card
