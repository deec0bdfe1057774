"""FGLA speed and quality vs librosa.griffinlim, measured in the same run (issue 4).

True magnitudes of the test corpus (pocketsphinx-testdata, 14 utterances, 46.6 s), 100
iterations, momentum 0.99, zero initial phase on both sides. Ours runs batched over length
buckets; librosa runs per file. Prints real-time factors (seconds per second of audio), the
speed ratio and mean PESQ-WB of both.

    .venv/bin/python benchmarks/phase.py [--iters 100] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import time

import librosa
import numpy as np
import torch
from _corpus import save_results, true_magnitudes
from pesq import pesq

from pipeline.config import load_config
from pipeline.synthesis import reconstruct


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    cfg = load_config("mel80-16k")
    ys, mags, lengths, audio_s = true_magnitudes(cfg)
    reconstruct(mags[:2], lengths[:2], cfg, "fgla", n_iter=2)            # warm-up
    ours_t, lib_t = [], []
    for _ in range(a.repeats):
        t = time.perf_counter()
        ours = reconstruct(mags, lengths, cfg, "fgla", n_iter=a.iters)
        ours_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        lib = [librosa.griffinlim(m.T, n_iter=a.iters, hop_length=cfg.hop_length, n_fft=cfg.n_fft,
                                  init=None, momentum=0.99, length=len(y)) for m, y in zip(mags, ys)]
        lib_t.append(time.perf_counter() - t)
    p_ours = np.mean([pesq(16000, y, o, "wb") for y, o in zip(ys, ours)])
    p_lib = np.mean([pesq(16000, y, o, "wb") for y, o in zip(ys, lib)])
    to, tl = min(ours_t), min(lib_t)
    out = {"audio_seconds": round(audio_s, 2), "iters": a.iters,
           "torch_threads": torch.get_num_threads(),
           "ours_rtf": round(to / audio_s, 4), "librosa_rtf": round(tl / audio_s, 4),
           "speedup_vs_librosa": round(tl / to, 2),
           "pesq_wb_ours": round(float(p_ours), 3), "pesq_wb_librosa": round(float(p_lib), 3)}
    print(json.dumps(out, indent=1))
    save_results("phase", out)


if __name__ == "__main__":
    main()
