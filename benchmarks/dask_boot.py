"""Start-up of a local 2-worker cluster until both workers can run the phase task.

Each measurement is a fresh process (the forkserver is started once per process), as the CLI
is: it imports the stage (torch with it), then times ``local_client(2)`` from entry until every
worker has imported ``pipeline.phase.stage`` (what its first task would do), and the close.
``preload``: the forkserver imports the stage before forking the workers (what ``run_tasks``
does); ``plain``: each worker imports it when asked. Interleaved pairs, order alternating.

    .venv/bin/python benchmarks/dask_boot.py [--pairs 6]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

MODULE = "pipeline.phase.stage"


def child(preload: bool) -> dict:
    import importlib

    importlib.import_module(MODULE)                  # as the CLI has, before the cluster
    from pipeline.parallel import local_client

    t = time.perf_counter()
    with local_client(2, preload=[MODULE] if preload else []) as c:
        up = time.perf_counter() - t
        c.run(importlib.import_module, MODULE)
        ready = time.perf_counter() - t
    return {"up": round(up, 3), "ready": round(ready, 3),
            "closed": round(time.perf_counter() - t, 3)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--child", choices=["preload", "plain"])
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child == "preload")))
        return
    runs: dict[str, list[dict]] = {"plain": [], "preload": []}
    for k in range(a.pairs):
        for side in (["plain", "preload"] if k % 2 == 0 else ["preload", "plain"]):
            r = subprocess.run([sys.executable, __file__, "--child", side], check=True,
                               capture_output=True, text=True)
            runs[side].append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(side, runs[side][-1], flush=True)
    print(json.dumps({side: {k: round(statistics.median(r[k] for r in rs), 3)
                             for k in ("up", "ready", "closed")} for side, rs in runs.items()},
                     indent=1))


if __name__ == "__main__":
    main()
