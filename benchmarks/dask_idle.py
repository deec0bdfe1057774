"""What an idle local dask cluster of 2 workers costs in CPU: this process (scheduler, nannies,
client) and each worker, in ms of CPU per second of wall time over --seconds, with dask's
defaults, with `pipeline.parallel.QUIET_WORKERS` but dask's 20 ms event-loop tick, and with
`QUIET_WORKERS` as shipped. Whatever an idle cluster burns, the shard tasks lose on a busy
one (two workers on two cores share them with this process).

    .venv/bin/python benchmarks/dask_idle.py [--seconds 10]
"""
from __future__ import annotations

import argparse
import json
import resource
import time

from pipeline.parallel import local_client


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    a = ap.parse_args()
    cases = {"dask_defaults": (False, {}),
             "quiet_but_20ms_tick": (True, {"distributed.admin.tick.interval": "20ms"}),
             "quiet_as_shipped": (True, {})}
    for name, (quiet, settings) in cases.items():
        with local_client(2, quiet=quiet, settings=settings) as c:
            time.sleep(1)
            m0, w0 = cpu_seconds(), c.run(cpu_seconds)
            time.sleep(a.seconds)
            m1, w1 = cpu_seconds(), c.run(cpu_seconds)
        print(name, json.dumps({
            "this_process_ms_per_s": round((m1 - m0) / a.seconds * 1000, 1),
            "workers_ms_per_s": [round((w1[k] - w0[k]) / a.seconds * 1000, 1) for k in w0]}),
            flush=True)


if __name__ == "__main__":
    main()
