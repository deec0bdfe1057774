"""The mel projection's filterbank products: dense matmuls vs the banded blocks of
:class:`pipeline.algorithms.joint.BandProducts`, microseconds per call, and one whole
mel-projected iteration, on one thread (the phase stage's CPU batch: 256 frames).

    .venv/bin/python benchmarks/checks/band_products.py [--config mel80-16k] [--frames 256]
"""
from __future__ import annotations

import argparse
import time

import torch

from pipeline.algorithms.joint import BandProducts, MelTarget, mel_iterate, project_mel
from pipeline.config import load_config
from pipeline.dsp.stft import FramePair


def per_call(fn, n: int = 300) -> float:
    for _ in range(10):
        fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="mel80-16k")
    ap.add_argument("--frames", type=int, default=256)
    a = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(a.config)
    gen = torch.Generator().manual_seed(0)
    mag = torch.rand(1, a.frames, cfg.n_freq, generator=gen)
    target = MelTarget.from_compressed(torch.zeros(1, a.frames, cfg.n_mels), cfg)
    banded = target.terms()
    dense = BandProducts(banded.AT, banded.An)              # the same products, no blocks
    R = torch.rand(1, a.frames, cfg.n_mels, generator=gen)
    target.mel = torch.matmul(mag, banded.AT).log_().clamp_min_(-11.5).exp_()
    pair = FramePair(cfg, a.frames, torch.tensor([a.frames * cfg.hop_length]), mag.device, mag.dtype)
    spec = pair.own_frames(mag.to(torch.complex64))
    rows = []
    for name, products in (("dense", dense), ("banded", banded)):
        target._terms = products
        rows.append((name, per_call(lambda: products.mel(mag)), per_call(lambda: products.spread(R)),
                     per_call(lambda: project_mel(mag, target)),
                     per_call(lambda: mel_iterate(spec, target, pair, 1), 100)))
    print(f"{cfg.name}, {a.frames} frames, one thread; microseconds per call")
    print("products  P A^T   R An   projection x3   mel-projected iteration")
    for name, *t in rows:
        print(f"{name:8s} " + "  ".join(f"{x:7.0f}" for x in t))


if __name__ == "__main__":
    main()
