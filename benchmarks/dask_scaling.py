"""dask over shards: phase (FGLA 100, true magnitudes) with 2 local workers vs 1.

Store: the test corpus repeated --repeat times (distinct ids; 39 -> 30 minutes of audio, >= the
2 minutes asked for), in shards of --shard-seconds (default: extract's own, 60 s).

This VM's speed drifts by +-10 % over minutes, more than the effects measured, so every
comparison is made in interleaved pairs: each pair runs both sides back to back, the
order alternating from pair to pair, and the script prints every pair's ratio and their
median. Measured, --pairs times each:

1. ``end_to_end``: the stage as a user runs it, ``phase(workers=2)`` (a fresh LocalCluster of 2
   single-threaded workers: start-up, imports and shut-down included) vs ``phase(workers=1,
   threads=1)`` (in this process, one torch thread; the cluster would only add start-up).
2. ``warm_clusters``: dask's own scaling, warm LocalClusters of 1 and of 2 single-threaded
   workers (imports done, first shard run) on all shards, as the stage plans them (with 2
   workers the last 4 shards in ~10 s parts).
3. ``no_dask``: the ceiling without dask, the stage's own shard task (FGLA 100, 1 thread) over
   the first --ceiling-shards shards in one plain process vs split over two (spawned
   processes, a warm-up shard each out of the timing). Two busy cores of a VM need not give
   twice one core's throughput (shared caches, memory bandwidth, the host's scheduling);
   dask cannot scale past that ratio.

4. ``tail`` (not run by default: ``--only tail``): one warm 2-worker cluster, the stage's
   planned tasks (the last shards in parts) vs whole shards only; ratio = whole / planned.

Also, once: the in-process path with the default threads (1 worker x 2 torch threads), the
cluster start-up and the scheduler's overhead per task (for the N-node estimate in
BENCHMARKS.md).

    .venv/bin/python benchmarks/dask_scaling.py [--repeat 39] [--shard-seconds 60] [--pairs 3]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

from _corpus import fgla_job, repeated, run_planned, run_shards, save_results

from pipeline.config import load_config
from pipeline.io.manifest import write_manifest
from pipeline.io.store import Store
from pipeline.parallel.tasks import local_client
from pipeline.stages.extract import DEFAULT_SHARD_SECONDS, extract
from pipeline.stages.phase import phase


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=39)
    ap.add_argument("--shard-seconds", type=float, default=DEFAULT_SHARD_SECONDS)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--ceiling-shards", type=int, default=16,
                    help="even: the two processes then time the same number of shards")
    ap.add_argument("--only", nargs="*", default=["end_to_end", "warm_clusters", "no_dask"],
                    help="a subset of: end_to_end warm_clusters no_dask tail")
    a = ap.parse_args()
    utts = repeated(a.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        man = write_manifest(utts, tmp / "m.jsonl")
        store = tmp / "s.zarr"
        extract(man, store, load_config("mel80-16k"), with_mag=True, shard_seconds=a.shard_seconds,
                progress=False)
        names = Store(store).shard_names()
        out = {"audio_seconds": round(sum(u.duration for u in utts), 1), "shards": len(names),
               "shard_seconds": a.shard_seconds}
        runs = {"end_to_end": lambda k: _end_to_end(store, tmp / f"e{k}"),
                "warm_clusters": lambda k: _warm(store, tmp / f"w{k}", names),
                "no_dask": lambda k: _no_dask(store, tmp / f"n{k}", names[:a.ceiling_shards]),
                "tail": lambda k: _tail(store, tmp / f"t{k}", names)}
        for what in a.only:
            pairs = []
            for k in range(a.pairs):
                one, two = runs[what](k)(k % 2 == 1)
                pairs.append({"1": round(one, 2), "2": round(two, 2), "ratio": round(one / two, 3)})
                print(what, json.dumps(pairs[-1]), flush=True)
            out[what] = {"pairs": pairs,
                         "median_ratio": round(statistics.median(p["ratio"] for p in pairs), 3)}
        t = time.perf_counter()
        phase(store, tmp / "default-threads", "fgla", n_iter=100, source="true", progress=False)
        out["in_process_default_threads_seconds"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        with local_client(2) as c:
            out["cluster_startup_seconds"] = round(time.perf_counter() - t, 2)
            t = time.perf_counter()
            c.gather(c.map(lambda x: x, range(200)))
            out["scheduler_overhead_per_task_ms"] = round((time.perf_counter() - t) / 200 * 1000, 2)
    print(json.dumps(out, indent=1))
    save_results("dask-scaling", out)


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _pair(one, two):
    """Run both sides back to back, ``two`` first when asked; returns (one's, two's) seconds."""
    def go(two_first: bool) -> tuple[float, float]:
        if two_first:
            t2 = two()
            return one(), t2
        return one(), two()
    return go


def _end_to_end(store: Path, dest: Path):
    def run(workers: int, threads: int | None) -> float:
        r = None

        def call():
            nonlocal r
            r = phase(store, dest / f"w{workers}", "fgla", n_iter=100, source="true",
                      workers=workers, threads=threads, progress=False)
        dt = _timed(call)
        assert r.ok, r.failures
        return dt
    return _pair(lambda: run(1, 1), lambda: run(2, None))


def _warm(store: Path, dest: Path, names: list[str]):
    def run(workers: int) -> float:
        with local_client(workers) as c:
            run_shards(c, fgla_job(store, dest / f"up{workers}"), names[:workers])   # warm-up
            return _timed(lambda: run_planned(c, fgla_job(store, dest / f"w{workers}"), workers))
    return _pair(lambda: run(1), lambda: run(2))


def _tail(store: Path, dest: Path, names: list[str]):
    def go(planned_first: bool) -> tuple[float, float]:
        with local_client(2) as c:
            run_shards(c, fgla_job(store, dest / "up"), names[:2])   # warm-up
            whole = lambda: _timed(lambda: run_shards(c, fgla_job(store, dest / "w"), names))
            planned = lambda: _timed(lambda: run_planned(c, fgla_job(store, dest / "p"), 2))
            if planned_first:
                p = planned()
                return whole(), p
            return whole(), planned()
    return go


def _no_dask(store: Path, dest: Path, names: list[str]):
    ctx = multiprocessing.get_context("spawn")

    def one() -> float:
        with ctx.Pool(1) as p:
            alone = p.starmap(_shards_work, [(str(store), str(dest / "p1"), names)])[0]
        return alone / (len(names) - 1) * (len(names) - 2)   # the same work as each of two below

    def two() -> float:
        with ctx.Pool(2) as p:
            both = p.starmap(_shards_work, [(str(store), str(dest / "p2"), names[0::2]),
                                            (str(store), str(dest / "p2"), names[1::2])])
        return max(both)
    return _pair(one, two)


def _shards_work(store: str, dest: str, names: list[str]) -> float:
    """Seconds for the phase stage's own shard task (FGLA 100, 1 thread) over ``names``,
    the first one (a warm-up: first-call costs) out of the timing."""
    from pipeline.stages.phase import phase_shard
    job = fgla_job(store, dest)
    phase_shard(job, names[0])
    t = time.perf_counter()
    for n in names[1:]:
        phase_shard(job, n)
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
