"""Peak RSS of the stages on one long recording (the test corpus tiled to MINUTES), score
with its default metrics included.

    .venv/bin/python benchmarks/checks/long_items.py --minutes 20 60 --iters 20

Each stage runs as the CLI does (its own process); the peak RSS is that process's
(``ru_maxrss`` of the finished child). Iterations do not change the memory (the arrays are
the same each iteration), so a few keep the run short.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]


def peak(args: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one CLI command in a fresh process."""
    code = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
            "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
            "print(time.perf_counter() - t, "
            "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)")
    r = subprocess.run([sys.executable, "-c", code, sys.executable, "-m", "pipeline.cli", *args,
                        "-q"], check=True, capture_output=True, text=True)
    s, mb = r.stdout.split()
    return float(s), float(mb)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[20, 60])
    ap.add_argument("--iters", type=int, default=20)
    a = ap.parse_args()
    from pipeline.io.audio import load
    from pipeline.io.manifest import read_manifest
    y = np.concatenate([load(u.path, 16000) for u in
                        read_manifest(REPO / "manifests" / "pocketsphinx.jsonl")])
    for minutes in a.minutes:
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "in"
            src.mkdir()
            n = int(minutes * 60 * 16000)
            sf.write(src / "long.wav", np.tile(y, n // len(y) + 1)[:n], 16000, subtype="PCM_16")
            store = Path(tmp) / "s.zarr"
            row = {"minutes": minutes}
            for name, args in (("extract", ["extract", str(src), "--out", str(store)]),
                               ("invert", ["invert", str(store)]),
                               ("phase_mel", ["phase", str(store), "--out", f"{tmp}/w1",
                                              "--iters", str(a.iters)]),
                               ("phase_mag", ["phase", str(store), "--out", f"{tmp}/w2",
                                              "--iters", str(a.iters), "--project", "mag"]),
                               ("score", ["score", "--ref", str(src), "--hyp", f"{tmp}/w1",
                                          "--out", f"{tmp}/report.csv"])):
                s, mb = peak(args)
                row[name] = {"seconds": round(s, 1), "peak_rss_mb": round(mb)}
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
