"""Issue 18 experiment: fine-tune the shipped inverter with a loss measured after FGLA.

The inverter is trained to match the true magnitude frame by frame (L1 of floored logs +
spectral convergence), but users hear the magnitude after FGLA has found it a phase: errors
FGLA cannot reconcile (an inconsistent spectrogram) cost more than the loss says. Here each
step also runs K FGLA iterations on the predicted magnitude of each crop, then rebuilds the
signal from the predicted magnitude with that phase and scores the STFT magnitude of that
signal against the true one (same L1 + SC). The gradient reaches the magnitude through the
ISTFT and STFT with the phase held, or (``--unrolled``) through all K iterations too.
Checkpointed and resumable (the project's Trainer); validation is the same two losses on the
validation store.

    PYTHONPATH=benchmarks .venv/bin/python benchmarks/checks/fgla_loss_finetune.py \
        --train data/train-mel80-16k.zarr --val data/val-mel80-16k.zarr \
        --out runs/invert-fglaloss-mel80 [--iters 32 --weight 1 --epochs 16 --steps 100]

then `benchmarks/invert.py --methods model --no-librosa --weights runs/.../NAME.pt`.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict

import numpy as np
import torch

from pipeline.algorithms.gla import iterate
from pipeline.dsp.stft import FramePair
from pipeline.io.store import Store
from pipeline.models.inverter import load_invert_model
from pipeline.stages.invert import mel_floor
from pipeline.train.invert import (
    CropSampler,
    TrainConfig,
    evaluate,
    load_frames,
    loss_fn,
    stack_utterances,
)
from pipeline.train.trainer import LoopConfig, Trainer

EDGE = 3   # frames at each end of a crop left out of the FGLA loss (cut signal edges)


def fgla_loss(logp: torch.Tensor, mag: torch.Tensor, n_frames: torch.Tensor, cfg, n_iter: int,
              floor: float, unrolled: bool = False) -> torch.Tensor:
    """L1 + SC of |STFT(ISTFT(pred * phase))| vs the true magnitude, the phase from
    ``n_iter`` FGLA iterations on the prediction: held (no gradient through them), or
    ``unrolled`` (the gradient goes through every iteration)."""
    B, T, _ = logp.shape
    pred = logp.exp()
    lengths = (n_frames - 1) * cfg.hop_length
    pair = FramePair(cfg, T, lengths, pred.device, pred.dtype)
    p = pred * pair.frame_mask
    if unrolled and torch.is_grad_enabled():
        # FGLA unrolled here with a projection whose gradient stays finite at |spec| = 0
        # (digital silence): gla.project's rsqrt(|spec|^2 + 1e-24) gave NaN weights
        alpha, prev, spec = 0.99 / 1.99, None, p.to(torch.complex64)
        for _ in range(n_iter):
            x = pair.istft(spec)
            y = x - alpha * prev if prev is not None else x
            prev = x
            t = pair.stft(y)
            spec = t * (p * torch.rsqrt(t.real.square() + t.imag.square() + 1e-8))
        x = pair.istft(spec)
    else:
        with torch.no_grad():
            q = p.detach()
            spec = iterate(q.to(torch.complex64), q, pair, n_iter)
            phase = spec / spec.abs().clamp_min(1e-12)
        x = pair.istft(p * phase)
    s = pair.stft(x)
    got = torch.sqrt(s.real.square() + s.imag.square() + 1e-12)
    t = torch.arange(T)[None, :, None]
    k = ((t >= EDGE) & (t < n_frames[:, None, None] - EDGE)).expand_as(got)
    return loss_fn(got[k].log(), mag[k], floor)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--val", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--weights", default=None, help="start (default: the shipped model)")
    ap.add_argument("--iters", type=int, default=32, help="FGLA iterations for the phase")
    ap.add_argument("--weight", type=float, default=1.0, help="of the FGLA loss")
    ap.add_argument("--unrolled", action="store_true", help="gradient through the iterations")
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--ema", type=float, default=0.998)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--val-items", type=int, default=96)
    a = ap.parse_args()

    tr, va = Store(a.train), Store(a.val)
    cfg = tr.config
    va.check_config(cfg, a.train)
    model = load_invert_model(a.weights, cfg).float().train()
    tc = TrainConfig(epochs=a.epochs, steps_per_epoch=a.steps, batch_size=a.batch_size,
                     crop=a.crop, lr=a.lr, threads=a.threads)
    fl = tc.loss_floor
    mel, mag, spans, _ = load_frames(tr, a.crop)
    vmel, vmag, vspans, _ = load_frames(va, 16)
    rng = np.random.default_rng(0)
    vsub = [vspans[i] for i in sorted(rng.choice(len(vspans), min(a.val_items, len(vspans)),
                                                 replace=False))]
    loop = LoopConfig(epochs=a.epochs, steps_per_epoch=a.steps, lr=a.lr, weight_decay=1e-4,
                      schedule="cosine", ema=a.ema, patience=a.epochs, seed=0, threads=a.threads)
    trainer = Trainer(model, a.out, loop, {"experiment": "fgla-loss", "args": vars(a)},
                      label="fgla-loss fine-tune")
    crops = CropSampler(mel, mag, spans, a.crop)
    crop_frames = torch.full((a.batch_size,), a.crop)

    def step(gen: torch.Generator) -> torch.Tensor:
        m, g = crops(gen, a.batch_size)
        logp = model(m)
        return loss_fn(logp, g, fl) + a.weight * fgla_loss(logp, g, crop_frames, cfg, a.iters,
                                                            fl, a.unrolled)

    @torch.no_grad()
    def validate(net) -> dict:
        base = evaluate(net, cfg, vmel, vmag, vspans, floor=fl)
        fg = []
        order = sorted(vsub, key=lambda s: s[1])
        for i in range(0, len(order), 16):
            chunk = order[i:i + 16]
            m, g = stack_utterances(vmel, vmag, chunk, mel_floor(cfg))
            nf = torch.tensor([n for _, n in chunk])
            fg.append(float(fgla_loss(net(m), g, nf, cfg, a.iters, fl)) * len(chunk))
        f = sum(fg) / len(vsub)
        return {**base, "fgla_loss": f, "loss": base["loss"] + a.weight * f}

    fitted = trainer.fit(step, validate, progress=True)
    card = {**model.card(), "trained_on": a.train, "validated_on": a.val,
            "data": f"fine-tuned from {a.weights or 'the shipped weights'} with the FGLA loss",
            "train": asdict(tc), "fgla_loss": {"iters": a.iters, "weight": a.weight},
            "best_epoch": fitted.best_epoch, "epochs_run": len(fitted.history),
            "validation": fitted.best, "train_seconds": fitted.seconds,
            "made_by": "benchmarks/checks/fgla_loss_finetune.py " + " ".join(
                f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
                for k, v in vars(a).items() if v is not None and v is not False)}
    print(trainer.export(card, half=True))


if __name__ == "__main__":
    main()
