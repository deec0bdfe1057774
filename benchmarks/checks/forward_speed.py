"""The inverter's forward pass alone, as issue 18's speed item counts it: batched mels of
mel80-16k through ``load_invert_model(WEIGHTS)`` in inference mode, 2 threads, best of >= 3
passes, at 16 x 1000 frames and at the 1000-frame batches ``pipeline invert`` makes.

    .venv/bin/python benchmarks/checks/forward_speed.py [WEIGHTS ...]   (default: the shipped)
"""
from __future__ import annotations

import sys

import torch
from _timing import best_of

from pipeline.config import load_config
from pipeline.models.inverter import load_invert_model


def main() -> None:
    torch.set_num_threads(2)
    cfg = load_config("mel80-16k")
    fps = cfg.sample_rate / cfg.hop_length
    for w in sys.argv[1:] or [None]:
        m = load_invert_model(w, cfg)
        for b, t in [(16, 1000), (4, 250), (1, 1000)]:
            x = torch.randn(b, t, cfg.n_mels) - 4
            with torch.inference_mode():
                best = best_of(lambda: m(x), max(3, 16000 // (b * t)))
            print(f"{w or 'shipped'}: {b} x {t} frames: {b * t / fps / best:.0f}x real time")


if __name__ == "__main__":
    main()
