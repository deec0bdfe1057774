"""A candidate of the fast-joint study: ADMM for the first part of the iterations, the default
multiplicative mel projection for the rest (the curves cross: ADMM leads at 100-200
iterations on Russian prompts and trails from 400 on). Pinv start, PESQ-WB / STOI per
budget and ADMM share, each utterance on its own (features in memory).

    PYTHONPATH=benchmarks .venv/bin/python benchmarks/checks/joint_hybrid.py \\
        [--manifest data/asterisk-ru/all.jsonl --every 3 --min-dur 1.5 --max-dur 8 --limit 60] \\
        [--budgets 100 200 400] [--shares 0.25 0.5]
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from joint_quality import REPO, features, scores

from pipeline.algorithms.joint import joint
from pipeline.config import load_config
from pipeline.io.manifest import read_manifest
from pipeline.synthesis import invert_frames


def hybrid(mag: torch.Tensor, mel: torch.Tensor, n: int, cfg, budget: int, share: float
           ) -> torch.Tensor:
    """``share`` of ``budget`` iterations of ADMM, then the rest mel-projected FGLA from its
    estimate (its magnitude and phase)."""
    lengths = torch.tensor([n])
    k = int(round(budget * share))
    x, pair = joint(mag, mel, lengths, cfg, n_iter=k, method="admm")
    spec = pair.stft(x)
    unit = spec / spec.abs().clamp_min(1e-12)
    x, pair = joint(spec.abs(), mel, lengths, cfg, n_iter=budget - k, method="multiplicative",
                    init=unit)
    return pair.crop(x, [n])[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--manifest", default=str(REPO / "manifests" / "pocketsphinx.jsonl"))
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--min-dur", type=float, default=0.0)
    ap.add_argument("--max-dur", type=float, default=1e9)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--budgets", type=int, nargs="+", default=[100, 200, 400])
    ap.add_argument("--shares", type=float, nargs="+", default=[0.25, 0.5])
    a = ap.parse_args()
    torch.set_num_threads(2)
    cfg = load_config("mel80-16k")
    utts = sorted((u for u in read_manifest(a.manifest) if a.min_dur <= u.duration <= a.max_dur),
                  key=lambda u: u.id)[::a.every]
    utts = utts[:a.limit] if a.limit else utts
    ys, _, mels = features(utts, cfg)
    mags = invert_frames(mels, cfg, "pinv")
    for budget in a.budgets:
        for share in a.shares:
            t0 = time.perf_counter()
            with torch.inference_mode():
                outs = [hybrid(torch.from_numpy(m)[None], torch.from_numpy(ml)[None], len(y), cfg,
                               budget, share).numpy() for m, ml, y in zip(mags, mels, ys)]
            sec = time.perf_counter() - t0
            p, s = scores(ys, outs, cfg.sample_rate)
            print(json.dumps({"budget": budget, "admm_share": share, "pesq": round(p, 3),
                              "stoi": round(s, 4), "seconds": round(sec, 1)}), flush=True)


if __name__ == "__main__":
    main()
