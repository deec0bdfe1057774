"""Equal wall time: model + FGLA (fixed magnitude) vs the joint route (pinv + mel-projected
FGLA) at a few iteration counts, engine only (inversion + phase, features in memory),
alternated --repeat times so both see the same machine; medians of the seconds, then PESQ-WB
and STOI of one run each. The test corpus by default.

    .venv/bin/python benchmarks/checks/equal_time.py [--joint-iters 50 60 70] [--repeat 7]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from joint_quality import REPO, features, scores

from pipeline.config import load_config
from pipeline.io.manifest import read_manifest
from pipeline.models.inverter import load_invert_model
from pipeline.synthesis import invert_frames, reconstruct


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--manifest", default=str(REPO / "manifests" / "pocketsphinx.jsonl"))
    ap.add_argument("--config", default="mel80-16k")
    ap.add_argument("--fixed-iters", type=int, default=100)
    ap.add_argument("--joint-iters", nargs="+", type=int, default=[50, 60, 70])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = load_config(a.config)
    ys, _, mels = features(read_manifest(a.manifest), cfg)
    lengths = [len(y) for y in ys]
    model = load_invert_model(None, cfg)

    def fixed():
        return reconstruct(invert_frames(mels, cfg, "model", model=model), lengths, cfg, "fgla",
                           n_iter=a.fixed_iters)

    def joint(n):
        return reconstruct(invert_frames(mels, cfg, "pinv"), lengths, cfg, "fgla", n_iter=n,
                           mels=mels, project="mel")

    routes = {f"model + FGLA {a.fixed_iters} (fixed)": fixed}
    routes.update({f"pinv + mel-projected {n}": (lambda n=n: joint(n)) for n in a.joint_iters})
    secs: dict[str, list[float]] = {k: [] for k in routes}
    outs = {}
    for _ in range(a.repeat):
        for name, fn in routes.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            secs[name].append(time.perf_counter() - t0)
    dur = sum(lengths) / cfg.sample_rate
    print(f"{len(ys)} utterances, {dur:.1f} s, {cfg.name}, {a.threads} thread(s), "
          f"median of {a.repeat} alternated runs")
    base = None
    for name in routes:
        p, s = scores(ys, outs[name], cfg.sample_rate)
        base = p if base is None else base
        print(f"{name:32s} {statistics.median(secs[name]):6.2f} s  (min {min(secs[name]):.2f})  "
              f"PESQ-WB {p:.3f} ({p - base:+.3f})  STOI {s:.4f}")


if __name__ == "__main__":
    main()
