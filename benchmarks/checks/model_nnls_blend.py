"""Issue 18, a direction tried: blend the learned inverter's log-magnitude with the NNLS one
(a weighted geometric mean, ``exp(a log model + (1 - a) log nnls)``) before a fixed-magnitude
FGLA 100, zero phase. The model has the better spectral convergence (it gets the loud bins
right), NNLS the better log-spectral distance (the quiet ones): does a blend keep both?
PESQ-WB on the test corpus beside the plain model and NNLS.

    PYTHONPATH=benchmarks .venv/bin/python benchmarks/checks/model_nnls_blend.py
        [--config mel80-16k] [--alphas 0.25 0.5 0.75 0.9]

Measured (BENCHMARKS.md, learned inverter; AMD EPYC VM): model 3.344, NNLS 3.069; model
weight 0.25 / 0.5 / 0.75 / 0.9: 3.147 / 3.237 / 3.290 / 3.265. Every blend is worse than the
model alone. Not adopted.
"""
from __future__ import annotations

import argparse

import numpy as np
from _corpus import StoredTestCorpus

from pipeline.config import load_config
from pipeline.models.inverter import LOG_FLOOR, load_invert_model
from pipeline.stages.invert import invert_frames


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="mel80-16k")
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.25, 0.5, 0.75, 0.9])
    a = ap.parse_args()
    cfg = load_config(a.config)
    corpus = StoredTestCorpus(cfg)
    model = invert_frames(corpus.mels, cfg, "model", model=load_invert_model(None, cfg))
    nnls = invert_frames(corpus.mels, cfg, "nnls")
    print("model", corpus.fgla_pesq(model), "| nnls", corpus.fgla_pesq(nnls), flush=True)
    for alpha in a.alphas:
        logs = [alpha * np.log(m + LOG_FLOOR) + (1 - alpha) * np.log(n + LOG_FLOOR)
                for m, n in zip(model, nnls)]
        blend = [np.maximum(np.exp(x) - LOG_FLOOR, 0).astype(np.float32) for x in logs]
        print(f"blend, model weight {alpha}", corpus.fgla_pesq(blend), flush=True)


if __name__ == "__main__":
    main()
