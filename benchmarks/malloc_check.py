"""Why `pipeline.parallel.tune_malloc` exists: FGLA 100 on 40 shards (10 min store of the test
corpus) in one process, 1 torch thread, with glibc malloc as dask workers get it
(MALLOC_TRIM_THRESHOLD_=65536) and with/without the tuning. Run each case in a fresh process:

    .venv/bin/python benchmarks/malloc_check.py /tmp/mc.zarr none          # default malloc
    MALLOC_TRIM_THRESHOLD_=65536 .venv/bin/python benchmarks/malloc_check.py /tmp/mc.zarr none
    MALLOC_TRIM_THRESHOLD_=65536 .venv/bin/python benchmarks/malloc_check.py /tmp/mc.zarr tune
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from _corpus import repeated
from pipeline.config import load_config
from pipeline.extract import extract
from pipeline.manifest import write_manifest
from pipeline.parallel import tune_malloc
from pipeline.phase.stage import PhaseJob, phase_shard
from pipeline.store import Store


def main():
    store, mode = sys.argv[1], sys.argv[2]
    if not Path(store).exists():
        man = write_manifest(repeated(13), Path(store).with_suffix(".jsonl"))
        extract(man, store, load_config("mel80-16k"), with_mag=True, shard_seconds=10, progress=False)
    if mode == "tune":
        tune_malloc()
    names = Store(store).shard_names()[:40]
    out = tempfile.mkdtemp()
    t = time.perf_counter()
    job = PhaseJob(store, out, "fgla", 100, source="true", threads=1)
    for n in names:
        phase_shard(job, n)
    print(f"{mode} MALLOC_TRIM_THRESHOLD_={os.environ.get('MALLOC_TRIM_THRESHOLD_')}: "
          f"{time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
