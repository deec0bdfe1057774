"""Issue 18 diagnostic: how often is the TRUE magnitude above the mel bound?

``log_magnitude_bound`` is exact in exact arithmetic (every filterbank term is non-negative),
so the truth can exceed it only by rounding (the stored mel) or in the bins no band sees
(where it is a cap, not a bound). Where it does, a training gradient that pushes the capped
output up can never be satisfied: the reason the inverter's cap blocks that half
(``pipeline.models.inverter._CapDown``). Prints, per store, the share of (frame, bin) pairs
of its first N utterances with the truth above the bound, above it by > 0.01 neper, and the
largest excess.

    .venv/bin/python benchmarks/checks/truth_above_bound.py data/val-mel250-16k.zarr
        data/val-mel80-16k.zarr data/val-hifigan-22k.zarr [--utterances 60]
"""
from __future__ import annotations

import argparse
from itertools import islice

import numpy as np
import torch

from pipeline.dsp.mel import log_magnitude_bound
from pipeline.io.store import Store


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("stores", nargs="+", help="stores written with --with-mag")
    ap.add_argument("--utterances", type=int, default=60)
    a = ap.parse_args()
    for path in a.stores:
        s = Store(path)
        pairs = zip(s.iter_utterances("mel"), s.iter_utterances("mag_true"))
        total = above = well_above = 0
        worst = 0.0
        for (_, mel), (_, mag) in islice(pairs, a.utterances):
            bound = log_magnitude_bound(torch.as_tensor(np.asarray(mel))[None].float(), s.config)[0]
            excess = torch.as_tensor(np.asarray(mag)).float().clamp_min(1e-30).log() - bound
            total += excess.numel()
            above += int((excess > 0).sum())
            well_above += int((excess > 0.01).sum())
            worst = max(worst, float(excess.max()))
        print(f"{path}: truth above the bound in {above / total:.2%} of frame-bins, by > 0.01 "
              f"neper in {well_above / total:.2%}, at most {worst:.3f} neper")


if __name__ == "__main__":
    main()
