"""A/B of the dask worker settings that `pipeline.parallel.QUIET_WORKERS` changes: warm
LocalClusters of 1 and of 2 single-threaded workers run the phase stage's shard task (FGLA
100, true magnitudes) on 39 shards of the test corpus repeated 8 times (a first shard
warms the workers up), with dask's defaults and with the quiet settings, twice in
alternation; prints the times and the best-of 2 vs 1 ratios.

    .venv/bin/python benchmarks/dask_quiet.py
"""
import tempfile
import time
from pathlib import Path

from _corpus import fgla_job, repeated, run_shards
from pipeline.config import load_config
from pipeline.extract import extract
from pipeline.manifest import write_manifest
from pipeline.parallel import local_client
from pipeline.store import Store


def main():
    with tempfile.TemporaryDirectory() as tmp:
        run(tmp)


def run(tmp: str):
    man = write_manifest(repeated(8), Path(tmp) / "m.jsonl")
    store = Path(tmp) / "s.zarr"
    extract(man, store, load_config("mel80-16k"), with_mag=True, shard_seconds=10, progress=False)
    names = Store(store).shard_names()[:40]
    res = {}
    for rep in range(2):
        for label in ("default", "quiet"):
            for nw in (1, 2):
                with local_client(nw, quiet=label == "quiet") as c:
                    c.run(lambda: __import__("pipeline.phase.stage"))
                    job = fgla_job(store, f"{tmp}/{label}{nw}{rep}")
                    run_shards(c, job, names[:1])       # warm-up
                    t = time.perf_counter()
                    run_shards(c, job, names[1:])
                    res.setdefault((label, nw), []).append(round(time.perf_counter() - t, 2))
        print(res, flush=True)
    for label in ("default", "quiet"):
        a, b = min(res[(label, 1)]), min(res[(label, 2)])
        print(label, "1 worker", res[(label, 1)], "2 workers", res[(label, 2)], "best-of ratio", round(a / b, 2))


if __name__ == "__main__":
    main()
