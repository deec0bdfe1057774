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

import dask
from pipeline.config import load_config
from pipeline.extract import extract
from _corpus import repeated
from pipeline.manifest import write_manifest
from pipeline.parallel import QUIET_WORKERS as QUIET, _guarded
from pipeline.phase.stage import PhaseJob, phase_shard
from pipeline.store import Store


def main():
    with tempfile.TemporaryDirectory() as tmp:
        run(tmp)


def run(tmp: str):
    man = write_manifest(repeated(8), Path(tmp) / "m.jsonl")
    store = Path(tmp) / "s.zarr"
    extract(man, store, load_config("mel80-16k"), with_mag=True, shard_seconds=10, progress=False)
    names = Store(store).shard_names()[:40]
    from dask.distributed import Client, LocalCluster
    res = {}
    for rep in range(2):
        for label, cfg in (("default", {}), ("quiet", QUIET)):
            with dask.config.set(cfg):
                for nw in (1, 2):
                    with LocalCluster(n_workers=nw, threads_per_worker=1, dashboard_address=None, silence_logs=40) as lc, Client(lc) as c:
                        c.run(lambda: __import__("pipeline.phase.stage"))
                        job = PhaseJob(str(store), f"{tmp}/{label}{nw}{rep}", "fgla", 100, source="true", threads=1)
                        c.submit(_guarded, phase_shard, names[0], (job, names[0]), pure=False).result()
                        t = time.perf_counter()
                        fs = [c.submit(_guarded, phase_shard, n, (job, n), pure=False) for n in names[1:]]
                        assert all(f.result().error is None for f in fs)
                        res.setdefault((label, nw), []).append(round(time.perf_counter() - t, 2))
        print(res, flush=True)
    for label in ("default", "quiet"):
        a, b = min(res[(label, 1)]), min(res[(label, 2)])
        print(label, "1 worker", res[(label, 1)], "2 workers", res[(label, 2)], "best-of ratio", round(a / b, 2))


if __name__ == "__main__":
    main()
