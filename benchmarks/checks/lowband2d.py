"""Issue 18 experiment: a 2-D convolutional net over (time, frequency) on the low band only,
fed the mel's own fine detail, on top of the frozen shipped inverter.

Below 1 kHz the mel bands (37 Hz apart at 80 slaney mels, 16 kHz) are narrower than the
voice's harmonic spacing, so the mel says where the harmonics are; the inverter (a 1-D net
with bins as channels) must learn that decoding anew at every frequency and does not (its
low-band log error on training crops is about what it is on validation: it underfits, it
does not overfit). Convolutions over frequency decode a comb at any pitch with the same
weights. Inputs, bins below ``--hz`` (default 1.25 kHz): the inverter's log-magnitude and the
log pseudo-inverse (the mel bands spread over their bins, the finest detail the mel has);
output: a residual, tapered to 0 between 1 and 1.25 kHz, mel-bounded like the inverter. The
post-net tried before (postnet2d.py) saw the inverter's output only, over all bins.

    PYTHONPATH=benchmarks .venv/bin/python benchmarks/checks/lowband2d.py \
        --train data/train-mel80-16k.zarr --val data/val-mel80-16k.zarr --out runs/x/lb2d \
        --base runs/x/s8-m80-ft/s8-m80-ft.pt [--channels 16 --layers 4 --epochs 10] \
        [--score data/ru-mel80-16k.zarr data/val-mel80-16k.zarr --seeds 6 0] [--lobes]
    ... --speed      (the forward passes' cost only: no training)

Measured (BENCHMARKS.md, tenth session; model + FGLA 100, PESQ-WB): 20 epochs, validation
3.596 -> 3.673, held-out Russian 3.319 / 3.297 -> 3.367 / 3.346 (zero / 6 starts), test
corpus (read after) 3.361 / 3.434 -> 3.460 / 3.485, but the forward pass fell from 433x to
88x real time (one thread, ``--speed``). Eleventh session: ``--time-kernel 1`` (hidden convs
over frequency only), 30 epochs, in ``channels_last``: validation 3.656, Russian 3.333 /
3.329, at a fraction of the cost; it ships in the package (``pipeline.models.lowband``,
``pipeline train invert --lowband``, which reproduces this script's run bit for bit);
``--separable``: 3.612, 3.307 / 3.297.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from _timing import best_of
from torch import nn

from pipeline.algorithms.invert import log_pinv
from pipeline.config import AudioConfig
from pipeline.io.audio import load
from pipeline.io.store import Store
from pipeline.metrics.registry import MetricError, pesq_wb
from pipeline.models.inverter import LOG_FLOOR, SCALE, PInvConvSkip, load_invert_model
from pipeline.models.lowband import LowBand2D as Net2D
from pipeline.stages.invert import invert_frames
from pipeline.stages.phase import reconstruct
from pipeline.train.invert import CropSampler, evaluate, load_frames, loss_fn
from pipeline.train.trainer import LoopConfig, Trainer


class LowBand2D(nn.Module):
    """The frozen ``base`` inverter, then the package's low-band 2-D net
    (:class:`pipeline.models.lowband.LowBand2D`, here with any kernel and dilation cycle)."""

    def __init__(self, base: PInvConvSkip, cfg: AudioConfig, channels: int, layers: int,
                 hz: float, kernel: int, dilation: int = 2, separable: bool = False,
                 time_kernel: int = 3):
        super().__init__()
        self.base, self.cfg = base, cfg
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.low = Net2D(cfg.sample_rate, cfg.n_fft, channels, layers, hz, separable,
                         time_kernel, kernel=kernel, dilations=dilation)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            lp = self.base(mel)                                   # [B, T, F]
            p = log_pinv(mel, self.cfg, LOG_FLOOR)
        return self.base._bound(self.low(lp, p, SCALE), mel)

    lobes = False   # the lobe refinement (algorithms.lobes) after the net, at inference

    def magnitude(self, mel: torch.Tensor) -> torch.Tensor:
        mag = self(mel).exp()
        if self.lobes:
            from pipeline.algorithms.lobes import refine_low_band
            mag = refine_low_band(mag, mel, self.cfg)
        return mag


def score(store: str, nets: dict, seeds: int) -> None:
    """PESQ-WB after FGLA 100 on every utterance: zero phase, then ``seeds`` random starts
    (as benchmarks/invert.py --seeds)."""
    s = Store(store)
    cfg = s.config
    ents, mels = zip(*s.iter_utterances("mel"))
    refs = [load(e.source, cfg.sample_rate) for e in ents]
    for name, net in nets.items():
        with torch.inference_mode():
            mags = invert_frames(list(mels), cfg, "model", model=net.eval())
        res = []
        for init, seed in [("zeros", 0)] + [("random", i) for i in range(seeds)]:
            waves = reconstruct(mags, [e.n_samples for e in ents], cfg, "fgla", n_iter=100,
                                init=init, seed=seed)
            vals = []
            for w, r in zip(waves, refs):
                try:
                    vals.append(pesq_wb(reference=r, estimate=w, sample_rate=cfg.sample_rate))
                except MetricError:
                    pass
            res.append(float(np.mean(vals)))
        rnd = f" random {np.mean(res[1:]):.3f} ({' '.join(f'{v:.3f}' for v in res[1:])})" if seeds else ""
        print(f"{store} {name}: zero {res[0]:.3f}{rnd}", flush=True)


def speed(cfg: AudioConfig, base: PInvConvSkip, frames: int = 4000, repeat: int = 3) -> None:
    """The forward pass alone (no refinement), one thread, 4 x 1000 frames of a random mel:
    the net, and the net + low-band 2-D nets of a few shapes (untrained: cost only)."""
    torch.set_num_threads(1)
    nets = {"net": base.eval()}
    for c, layers, dil, sep, kt in [(16, 4, 2, False, 3), (16, 4, 1, False, 3),
                                    (8, 4, 1, False, 3), (16, 4, 2, True, 3),
                                    (16, 4, 2, False, 1), (32, 4, 2, True, 3)]:
        nets[f"+ 2-D, {c} channels, {layers} layers, dilation {dil}"
             + (", separable" if sep else "") + f", time kernel {kt}"] = \
            LowBand2D(base, cfg, c, layers, 1250.0, 7, dil, sep, kt).eval()
    mel = torch.randn(4, frames // 4, cfg.n_mels) - 5
    fps = cfg.sample_rate / cfg.hop_length
    with torch.inference_mode():
        for name, net in nets.items():
            best = best_of(lambda: net(mel), repeat)
            print(f"{name}: {frames / fps / best:.0f}x real time", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--val", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--base", required=True)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--kernel", type=int, default=7)
    ap.add_argument("--hz", type=float, default=1250.0)
    ap.add_argument("--dilation", type=int, default=2, help="hidden layers' dilations over "
                    "frequency cycle 1..this (1: none)")
    ap.add_argument("--separable", action="store_true", help="hidden layers: depthwise, then "
                    "pointwise convs")
    ap.add_argument("--time-kernel", type=int, default=3, help="hidden layers' kernel over time")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--over", type=float, default=6.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--score", nargs="*", default=[], help="stores to score after training")
    ap.add_argument("--seeds", type=int, nargs="*", default=[], help="random starts per store")
    ap.add_argument("--lobes", action="store_true", help="score with the lobe refinement after "
                    "the net (re-running a finished run only scores)")
    ap.add_argument("--speed", action="store_true", help="only time the forward passes")
    a = ap.parse_args()

    tr, va = Store(a.train), Store(a.val)
    if a.speed:
        speed(tr.config, load_invert_model(a.base, tr.config))
        return
    cfg = tr.config
    base = load_invert_model(a.base, cfg)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = LowBand2D(base, cfg, a.channels, a.layers, a.hz, a.kernel, a.dilation,
                        a.separable, a.time_kernel)
    mel, mag, spans, _ = load_frames(tr, 64)
    vmel, vmag, vspans, _ = load_frames(va, 1)
    crops = CropSampler(mel, mag, spans, 64)
    loop = LoopConfig(epochs=a.epochs, steps_per_epoch=a.steps, lr=a.lr, weight_decay=1e-4,
                      schedule="cosine", ema=0.998, patience=a.epochs, seed=0, threads=a.threads)
    # the settings a resume must match: not the scoring options; a checkpoint lacking an
    # option added later is read at its default (runs from before them resume)
    args = {k: v for k, v in vars(a).items() if k not in ("score", "seeds", "lobes")}
    trainer = Trainer(net, a.out, loop, {"experiment": "lowband2d", "args": args},
                      label="low-band 2-D net",
                      defaults={"args": {"dilation": 2, "separable": False, "time_kernel": 3}})

    def step(gen: torch.Generator) -> torch.Tensor:
        m, g = crops(gen, a.batch_size)
        return loss_fn(net(m), g, over=a.over)

    fitted = trainer.fit(step, lambda n: evaluate(n, cfg, vmel, vmag, vspans, over=a.over),
                         progress=False)
    print("validation, base:", evaluate(base, cfg, vmel, vmag, vspans, over=a.over), flush=True)
    print("validation, best epoch", fitted.best_epoch, fitted.best, flush=True)
    net.load_state_dict(trainer.best_state())
    net.lobes = a.lobes
    for store, seeds in zip(a.score, a.seeds or [0] * len(a.score)):
        score(store, {"base + low-band 2-D net" + (" + lobes" if a.lobes else ""): net}, seeds)


if __name__ == "__main__":
    main()
