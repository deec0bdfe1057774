"""Issue 18 experiment: a 2-D convolutional post-net over (frequency, time) on the shipped
inverter's log-magnitude.

The shipped inverter is a 1-D conv net with frequency bins as channels: a harmonic comb at
another pitch is, to it, another pattern. Convolutions over frequency see a comb at any pitch
with the same weights. Here a small residual 2-D net (dilated over frequency, so that its
receptive field spans several harmonics at 15.6 Hz a bin) refines the frozen shipped model's
output, trained on the shipped recipe's data (never the test corpus) with the inverter's own
loss; then FGLA 100 from zero phase on the test corpus, beside the shipped model alone.

    PYTHONPATH=benchmarks .venv/bin/python benchmarks/checks/postnet2d.py \
        --train data/train-mel80-16k.zarr --val data/val-mel80-16k.zarr --out runs/postnet2d \
        [--channels 16 --layers 6 --epochs 12 --steps 100]

Measured (BENCHMARKS.md, learned inverter; AMD EPYC VM; 8 channels, 4 dilated layers, 20 x
100 steps of 8 crops): validation loss 0.4728 -> 0.4631, LSD 9.73 -> 9.24 dB, but test
corpus PESQ-WB after FGLA 100 3.344 -> 3.271 from a zero phase, 3.315 -> 3.319 as the
mean of 6 random starts (issue18_random_starts.py): no gain. Not adopted.
"""
from __future__ import annotations

import argparse

import torch
from _corpus import StoredTestCorpus
from torch import nn

from pipeline.config import AudioConfig
from pipeline.io.store import Store
from pipeline.models.inverter import SCALE, PInvConvSkip, load_invert_model
from pipeline.models.lowband import zero_output_conv
from pipeline.stages.invert import invert_frames
from pipeline.train.invert import CropSampler, evaluate, load_frames, loss_fn
from pipeline.train.trainer import LoopConfig, Trainer


class PostNet2D(nn.Module):
    """Frozen inverter, then ``log-mag + net2d(log-mag)``, bounded by the mel like the
    inverter. The 2-D net: 3x3 convs over (frequency, time), dilations over frequency cycled
    1, 2, 4, 8, GELU, the last layer zero-initialised (starts as the inverter alone)."""

    def __init__(self, base: PInvConvSkip, cfg: AudioConfig, channels: int, layers: int):
        super().__init__()
        self.base, self.cfg = base, cfg
        for p in self.base.parameters():
            p.requires_grad_(False)
        convs: list[nn.Module] = [nn.Conv2d(1, channels, 3, padding=1), nn.GELU()]
        for i in range(layers):
            d = 2 ** (i % 4)
            convs += [nn.Conv2d(channels, channels, 3, padding=(d, 1), dilation=(d, 1)), nn.GELU()]
        self.net = nn.Sequential(*convs, zero_output_conv(channels))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            lp = self.base(mel)                                   # [B, T, F]
        res = self.net(lp.transpose(1, 2)[:, None] / SCALE)[:, 0].transpose(1, 2)
        return self.base._bound(lp + res, mel)


def test_corpus_quality(cfg: AudioConfig, nets: dict[str, nn.Module]) -> dict[str, float]:
    """PESQ-WB of FGLA 100 (zero phase) on each net's magnitudes, the test corpus."""
    corpus = StoredTestCorpus(cfg)
    out = {}
    for name, net in nets.items():
        with torch.inference_mode():
            mags = invert_frames(corpus.mels, cfg, "model", model=net.eval())
        out[name] = corpus.fgla_pesq(mags)
        print(name, out[name], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--val", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()

    tr, va = Store(a.train), Store(a.val)
    cfg = tr.config
    va.check_config(cfg, a.train)
    base = load_invert_model(None, cfg)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = PostNet2D(base, cfg, a.channels, a.layers)
    mel, mag, spans, _ = load_frames(tr, a.crop)
    vmel, vmag, vspans, _ = load_frames(va, 1)
    crops = CropSampler(mel, mag, spans, a.crop)
    loop = LoopConfig(epochs=a.epochs, steps_per_epoch=a.steps, lr=a.lr, weight_decay=1e-4,
                      schedule="cosine", ema=0.998, patience=a.epochs, seed=0, threads=a.threads)
    trainer = Trainer(net, a.out, loop, {"experiment": "postnet2d", "args": vars(a)},
                      label="2-D post-net")

    def step(gen: torch.Generator) -> torch.Tensor:
        m, g = crops(gen, a.batch_size)
        return loss_fn(net(m), g)

    fitted = trainer.fit(step, lambda n: evaluate(n, cfg, vmel, vmag, vspans), progress=True)
    print("validation, shipped model:", evaluate(base, cfg, vmel, vmag, vspans), flush=True)
    print("validation, best epoch", fitted.best_epoch, fitted.best, flush=True)
    net.load_state_dict(trainer.best_state())   # the weight average's, as validated
    test_corpus_quality(cfg, {"shipped model": base, "model + 2-D post-net": net})


if __name__ == "__main__":
    main()
