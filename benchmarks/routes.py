"""Mel -> wav routes as a user runs them: the whole CLI (`pipeline invert` then `pipeline
phase`, process start-up included), timed, then scored with `pipeline score` (PESQ-WB, STOI).

    .venv/bin/python benchmarks/routes.py --config mel80-16k \
        --route model:mag:100 --route pinv:mel:100 --route pinv:mel:400 --route pinv:mel:800

A route is METHOD:PROJECT:ITERS (METHOD of `invert`, PROJECT of `phase --project`, ITERS of
`phase --iters`, every one of them: `--tol 0`; algorithm fgla, or METHOD:PROJECT:ITERS:admm). The store of the test corpus
(or --manifest) is extracted once, untimed. Each route runs --repeat times; the median wall
time is reported. Results go to benchmarks/results/routes-CONFIG.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PIPELINE = [sys.executable, "-m", "pipeline.cli"]


def run(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([*PIPELINE, *args, "-q"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--manifest", default=str(REPO / "manifests" / "pocketsphinx.jsonl"))
    ap.add_argument("--config", default="mel80-16k")
    ap.add_argument("--route", action="append", required=True)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "s.zarr"
        subprocess.run([*PIPELINE, "extract", a.manifest, "--out", str(store), "--config",
                        a.config, "-q"], check=True)
        from pipeline.io.store import Store
        audio = sum(e.n_samples for e in Store(store).all_entries()) / Store(store).config.sample_rate
        for route in a.route:
            method, project, iters, *algo = route.split(":")
            algo = algo[0] if algo else "fgla"
            times, wavs = [], Path(tmp) / route.replace(":", "-")
            for _ in range(a.repeat):
                shutil.rmtree(wavs, ignore_errors=True)
                t = run("invert", str(store), "--method", method, "--overwrite")
                t += run("phase", str(store), "--out", str(wavs), "--algo", algo, "--iters", iters,
                         "--project", project, *(["--tol", "0"] if algo == "fgla" else []))
                times.append(t)
            report = Path(tmp) / f"{wavs.name}.csv"
            subprocess.run([*PIPELINE, "score", "--ref", str(store), "--hyp", str(wavs), "--out",
                            str(report), "--metrics", "pesq_wb,stoi", "-q"], check=True,
                           stdout=subprocess.DEVNULL)
            with report.open() as fh:
                vals = list(csv.DictReader(fh))
            row = {"route": route, "config": a.config, "audio_s": round(audio, 2),
                   "seconds": round(statistics.median(times), 2),
                   "rtf": round(statistics.median(times) / audio, 4),
                   "pesq_wb": round(statistics.mean(float(v["pesq_wb"]) for v in vals), 3),
                   "stoi": round(statistics.mean(float(v["stoi"]) for v in vals), 4)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = Path(a.out or REPO / "benchmarks" / "results" / f"routes-{a.config}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
