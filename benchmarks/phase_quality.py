"""Phase retrieval on TRUE magnitudes (phase only): PESQ-WB / STOI vs iterations and wall time.

GLA, FGLA (zeros / random / pghi initial phase) and DeGLI (shipped weights), batched over
the whole test corpus (pocketsphinx-testdata, 46.6 s) in one process.

    .venv/bin/python benchmarks/phase_quality.py [--iters 0 5 10 25 50 100] [--degli 1 3 5 10 20]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
from pesq import pesq
from pystoi import stoi

from _corpus import true_magnitudes
from pipeline.config import load_config
from pipeline.phase import reconstruct


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, nargs="+", default=[0, 5, 10, 25, 50, 100, 200])
    ap.add_argument("--degli", type=int, nargs="*", default=[1, 3, 5, 10, 20])
    a = ap.parse_args()
    cfg = load_config("mel80-16k")
    ys, mags, lengths, audio_s = true_magnitudes(cfg)
    reconstruct(mags[:2], lengths[:2], cfg, "fgla", n_iter=2)

    def run(algo, it, **kw):
        t = time.perf_counter()
        w = reconstruct(mags, lengths, cfg, algo, n_iter=it, **kw)
        dt = time.perf_counter() - t
        p = float(np.mean([pesq(16000, y, o, "wb") for y, o in zip(ys, w)]))
        s = float(np.mean([stoi(y, o, 16000) for y, o in zip(ys, w)]))
        row = {"algo": algo, **{k: v for k, v in kw.items()}, "iters": it, "seconds": round(dt, 2),
               "rtf": round(dt / audio_s, 4), "pesq_wb": round(p, 3), "stoi": round(s, 4)}
        print(json.dumps(row), flush=True)
        return row

    rows = []
    for it in a.iters:
        rows.append(run("gla", it, init="zeros"))
        for init in ("zeros", "random", "pghi"):
            rows.append(run("fgla", it, init=init))
    for it in a.degli:
        for init in ("zeros", "pghi"):
            rows.append(run("degli", it, init=init))


if __name__ == "__main__":
    main()
