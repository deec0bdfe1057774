"""Validation speech quality of inversion weights: model -> FGLA 100 -> PESQ-WB / STOI on
every utterance of a validation store (written by `pipeline extract --with-mag`), the
figure used to compare training runs without touching the test corpus. Utterances that
PESQ cannot score (no speech detected) are skipped and counted.

    .venv/bin/python benchmarks/checks/invert_val.py --weights runs/NAME/NAME.pt
        [--store data/val-mel80-16k.zarr] [--momentum 0.99 [0.9 ...]]
        [--init zeros [random pghi ...]] [--seeds 0 [1 2 ...]]

Every combination of momentum x init x seed is scored (the seed only matters for ``random``).
"""
from __future__ import annotations

import argparse

import numpy as np

from pipeline.io.audio import load
from pipeline.io.store import Store
from pipeline.metrics.registry import MetricError, pesq_wb, stoi
from pipeline.models.inverter import load_invert_model
from pipeline.synthesis import AlgoOptions, invert_frames, reconstruct


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--store", default="data/val-mel80-16k.zarr")
    ap.add_argument("--momentum", type=float, nargs="+", default=[0.99])
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--init", nargs="+", default=["zeros"], choices=["zeros", "random", "pghi"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    a = ap.parse_args()
    s = Store(a.store)
    cfg = s.config
    model = load_invert_model(a.weights, cfg)
    ents, mels = zip(*s.iter_utterances("mel"))
    mags = invert_frames(list(mels), cfg, "model", model=model)
    refs = [load(e.source, cfg.sample_rate) for e in ents]
    runs = [(m, i, sd) for m in a.momentum for i in a.init
            for sd in (a.seeds if i == "random" else [0])]
    for mom, init, seed in runs:
        waves = reconstruct(mags, [e.n_samples for e in ents], cfg, "fgla", n_iter=a.iters,
                            init=init, seed=seed, options=AlgoOptions(momentum=mom))
        p, st, skipped = [], [], 0
        for y, w in zip(refs, waves):
            try:
                p.append(pesq_wb(reference=y, estimate=w, sample_rate=cfg.sample_rate))
            except MetricError:   # e.g. PESQ found no utterance
                skipped += 1
                continue
            st.append(stoi(reference=y, estimate=w, sample_rate=cfg.sample_rate))
        print(f"{a.weights} momentum {mom} init {init} seed {seed}: PESQ {np.mean(p):.3f} STOI {np.mean(st):.4f} "
              f"({len(p)} utterances, {skipped} unscorable)", flush=True)


if __name__ == "__main__":
    main()
