"""Extraction throughput (x real time) vs a librosa per-file loop, measured in the same run.

Corpus: pocketsphinx-testdata (14 utterances, 46.6 s) repeated --repeat times (as distinct ids)
so that the run is long enough to time. Both sides read the files, resample when needed and
compute the same log-mel (mel80-16k); ours also writes the zarr store.

    .venv/bin/python benchmarks/extract.py [--repeat 200] [--workers 1 2]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import librosa
import numpy as np
from _corpus import repeated, save_results

from pipeline.config import load_config
from pipeline.io.manifest import write_manifest
from pipeline.stages.extract import extract


def librosa_loop(utts, cfg):
    out = []
    for u in utts:
        y, _ = librosa.load(u.path, sr=cfg.sample_rate) if not u.path.endswith(".raw") else (
            np.fromfile(u.path, "<i2").astype(np.float32) / 32768, None)
        m = librosa.feature.melspectrogram(y=y, sr=cfg.sample_rate, n_fft=cfg.n_fft,
                                           hop_length=cfg.hop_length, power=1.0,
                                           n_mels=cfg.n_mels, fmax=cfg.fmax, pad_mode="constant")
        out.append(np.log(np.maximum(m, cfg.clamp)).T)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    a = ap.parse_args()
    cfg = load_config("mel80-16k")
    utts = repeated(a.repeat)
    audio_s = sum(u.duration for u in utts)
    with tempfile.TemporaryDirectory() as tmp:
        man = write_manifest(utts, Path(tmp) / "m.jsonl")
        librosa_loop(utts[:2], cfg)                       # warm-up (imports, numba)
        t = time.perf_counter()
        librosa_loop(utts, cfg)
        t_lib = time.perf_counter() - t
        rows = {"audio_seconds": round(audio_s, 1), "librosa_loop_xrt": round(audio_s / t_lib, 1)}
        for w in a.workers:
            t = time.perf_counter()
            res = extract(man, Path(tmp) / f"w{w}.zarr", cfg, workers=w, shard_seconds=30,
                          progress=False)
            dt = time.perf_counter() - t
            assert res.ok
            rows[f"ours_workers{w}_xrt"] = round(audio_s / dt, 1)
            rows[f"ours_workers{w}_vs_librosa"] = round(t_lib / dt, 2)
    print(json.dumps(rows, indent=1))
    save_results("extract", rows)


if __name__ == "__main__":
    main()
