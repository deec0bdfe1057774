"""Joint mel inversion vs fixed-magnitude FGLA: PESQ-WB / STOI vs iterations and seconds.

For each initial magnitude (pinv, nnls, model) and each route (fixed = FGLA on the inverted
magnitude; multiplicative = mel-projected FGLA, every iteration; admm), on a corpus given as a
manifest (default: the test corpus), at the iteration counts of --iters. Batches as the phase
stage does (length buckets of 256 frames, one thread per... whatever torch has).

    .venv/bin/python benchmarks/joint_quality.py --config mel80-16k --iters 25 50 100 200 400

Held out of the learned inverter's training (asterisk en/fr/es, klettres/ktuberling): the
Russian asterisk voice, 20 prompts of 1.5-8 s (58.4 s):

    pipeline prepare asterisk --languages ru --out data/asterisk-ru
    cat data/asterisk-ru/asterisk-{train,val}.jsonl > data/asterisk-ru/all.jsonl
    .venv/bin/python benchmarks/joint_quality.py --manifest data/asterisk-ru/all.jsonl \
        --every 12 --min-dur 1.5 --max-dur 8 --limit 20
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _corpus import save_results
from pesq import pesq
from pystoi import stoi

from pipeline.config import load_config
from pipeline.dsp.mel import compress, filterbank, ragged_batch, stft
from pipeline.io.audio import load
from pipeline.io.manifest import read_manifest
from pipeline.io.weights import WeightsError
from pipeline.models.inverter import load_invert_model
from pipeline.synthesis import AlgoOptions, invert_frames, reconstruct

REPO = Path(__file__).resolve().parent.parent


def features(utts, cfg):
    ys = [load(u.path, cfg.sample_rate) for u in utts]
    batch, n = ragged_batch(ys, cfg)
    mags, mels = [], []
    A = filterbank(cfg)
    for i, k in enumerate(n):
        m = stft(batch[i:i + 1], cfg, padded=True).abs()[0, :, :k]          # [F, T]
        p = m if cfg.power == 1 else m ** 2
        mels.append(compress(A @ p, cfg).T.contiguous().numpy())
        mags.append(m.T.contiguous().numpy())
    return ys, mags, mels


def scores(ys, outs, sr):
    ref = [y if sr == 16000 else load_resampled(y, sr) for y in ys]
    hyp = [o if sr == 16000 else load_resampled(o, sr) for o in outs]
    p = [pesq(16000, r, h, "wb") for r, h in zip(ref, hyp)]
    s = [stoi(r, h, 16000) for r, h in zip(ref, hyp)]
    return float(np.mean(p)), float(np.mean(s))


def load_resampled(y, sr):
    import soxr
    return soxr.resample(y, sr, 16000)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--manifest", default=str(REPO / "manifests" / "pocketsphinx.jsonl"))
    ap.add_argument("--config", default="mel80-16k")
    ap.add_argument("--limit", type=int, default=0, help="at most this many utterances")
    ap.add_argument("--every", type=int, default=1, help="every k-th utterance (sorted by id)")
    ap.add_argument("--min-dur", type=float, default=0.0)
    ap.add_argument("--max-dur", type=float, default=1e9)
    ap.add_argument("--inits", nargs="+", default=["pinv", "nnls", "model"])
    ap.add_argument("--routes", nargs="+", default=["fixed", "multiplicative", "admm"],
                    choices=["fixed", "multiplicative", "admm"])
    ap.add_argument("--iters", nargs="+", type=int, default=[25, 50, 100, 200, 400])
    ap.add_argument("--rho", type=float, default=0.03)
    ap.add_argument("--lam", type=float, default=1e6)
    ap.add_argument("--steps", type=int, default=3, help="multiplicative rescalings per iteration")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = load_config(a.config)
    utts = read_manifest(a.manifest)
    if a.every > 1 or a.min_dur > 0 or a.max_dur < 1e9:
        utts = sorted((u for u in utts if a.min_dur <= u.duration <= a.max_dur),
                      key=lambda u: u.id)[::a.every]
    if a.limit:
        utts = utts[:a.limit]
    ys, true, mels = features(utts, cfg)
    dur = sum(len(y) for y in ys) / cfg.sample_rate
    print(f"{len(ys)} utterances, {dur:.1f} s, config {cfg.name}")
    lengths = [len(y) for y in ys]
    rows = []
    for init in a.inits:
        t0 = time.perf_counter()
        if init == "true":
            mags = true
        else:
            model = None
            if init == "model":
                try:
                    model = load_invert_model(None, cfg)
                except WeightsError as exc:
                    print(f"skip model: {exc}")
                    continue
            mags = invert_frames(mels, cfg, init, model=model)
        t_inv = time.perf_counter() - t0
        for route in a.routes:
            for it in a.iters:
                t0 = time.perf_counter()
                if route == "fixed":
                    outs = reconstruct(mags, lengths, cfg, "fgla", n_iter=it)
                elif route == "admm":
                    outs = reconstruct(mags, lengths, cfg, "admm", n_iter=it, mels=mels,
                                       options=AlgoOptions(rho=a.rho, lam=a.lam))
                else:
                    outs = reconstruct(mags, lengths, cfg, "fgla", n_iter=it, mels=mels,
                                       project="mel",
                                       options=AlgoOptions(steps=a.steps))
                sec = time.perf_counter() - t0
                p, s = scores(ys, outs, cfg.sample_rate)
                row = dict(init=init, route=route + (f"x{a.steps}" if route == "multiplicative" else ""),
                           iters=it, pesq=round(p, 3), stoi=round(s, 4),
                           seconds=round(sec + t_inv, 2), rtf=round((sec + t_inv) / dur, 4))
                rows.append(row)
                print(json.dumps(row), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1))
    else:
        save_results(f"joint-{Path(a.manifest).stem}", rows)


if __name__ == "__main__":
    main()
