"""A candidate of the fast-joint study: the default mel-projected FGLA with its momentum
restarted every --period iterations (the previous estimate forgotten), pinv start, PESQ-WB /
STOI per budget, each utterance on its own (features in memory).

    PYTHONPATH=benchmarks .venv/bin/python benchmarks/checks/joint_restart.py \\
        [--manifest data/asterisk-ru/all.jsonl --every 3 --min-dur 1.5 --max-dur 8 --limit 60] \\
        [--budgets 100 200 400] [--periods 50 100]
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from joint_quality import REPO, features, scores

from pipeline.algorithms import joint as J
from pipeline.config import load_config
from pipeline.io.manifest import read_manifest
from pipeline.synthesis import invert_frames


def restarted(period: int):
    """:func:`pipeline.algorithms.joint.mel_iterate` with the momentum restarted every
    ``period`` iterations."""
    def mel_iterate(spec, target, pair, n_iter, momentum=0.99, kind="multiplicative", steps=3):
        alpha = momentum / (1.0 + momentum)
        prev = None
        for i in range(n_iter):
            if i % period == 0:
                prev = None
            rebuilt = pair.stft(pair.istft(spec))
            ang = torch.sub(rebuilt, prev, alpha=alpha) if prev is not None else rebuilt
            prev = rebuilt
            mag, inv = J._unit(ang)
            scale = inv.mul_(J.project_mel(mag, target, kind, None, steps)).mul_(pair.frame_mask)
            spec = ang * scale if ang is rebuilt else ang.mul_(scale)
        return spec
    return mel_iterate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--manifest", default=str(REPO / "manifests" / "pocketsphinx.jsonl"))
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--min-dur", type=float, default=0.0)
    ap.add_argument("--max-dur", type=float, default=1e9)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--budgets", type=int, nargs="+", default=[100, 200, 400])
    ap.add_argument("--periods", type=int, nargs="+", default=[50, 100])
    a = ap.parse_args()
    torch.set_num_threads(2)
    cfg = load_config("mel80-16k")
    utts = sorted((u for u in read_manifest(a.manifest) if a.min_dur <= u.duration <= a.max_dur),
                  key=lambda u: u.id)[::a.every]
    utts = utts[:a.limit] if a.limit else utts
    ys, _, mels = features(utts, cfg)
    mags = invert_frames(mels, cfg, "pinv")
    plain = J.mel_iterate
    for period in a.periods:
        J.mel_iterate = restarted(period)
        for budget in a.budgets:
            t0 = time.perf_counter()
            with torch.inference_mode():
                outs = []
                for m, ml, y in zip(mags, mels, ys):
                    x, pair = J.joint(torch.from_numpy(m)[None], torch.from_numpy(ml)[None],
                                      torch.tensor([len(y)]), cfg, n_iter=budget)
                    outs.append(pair.crop(x, [len(y)])[0].numpy())
            sec = time.perf_counter() - t0
            p, s = scores(ys, outs, cfg.sample_rate)
            print(json.dumps({"period": period, "budget": budget, "pesq": round(p, 3),
                              "stoi": round(s, 4), "seconds": round(sec, 1)}), flush=True)
    J.mel_iterate = plain


if __name__ == "__main__":
    main()
