"""dask over shards: phase (FGLA 100, true magnitudes) with 1 vs 2 local workers.

Store: the test corpus repeated --repeat times (distinct ids; 39 -> 30 minutes of audio, >= the
2 asked for), in shards of --shard-seconds. Runs: 1 worker in-process (no cluster: the
stage's own 1-worker path) with 1 and with 2 torch threads, and a dask LocalCluster of 2
single-threaded workers (start-up included). Also prints the per-shard cost and the
scheduler overhead used for the N-node estimate in BENCHMARKS.md.

Without dask, first: the stage's own shard task (FGLA 100, 1 thread) over the first 40
shards in one plain process, then split over two (multiprocessing, spawn). Last, the
machine's own ceiling on synthetic work, also without dask: the same FGLA work (a fixed batch, 1 torch
thread) in one process alone, then in two plain processes at once (multiprocessing, spawn).
Two busy cores of a VM need not give twice one core's throughput (shared caches, memory
bandwidth, the host's scheduling); dask cannot scale past that ratio.

    .venv/bin/python benchmarks/dask_scaling.py [--repeat 39] [--shard-seconds 10]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from pathlib import Path

from pipeline.config import load_config
from pipeline.extract import extract
from _corpus import fgla_job, repeated, run_shards
from pipeline.manifest import write_manifest
from pipeline.parallel import local_client
from pipeline.phase import phase
from pipeline.store import Store


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=39)
    ap.add_argument("--shard-seconds", type=float, default=10.0)
    ap.add_argument("--ceiling-repeats", type=int, default=3)
    ap.add_argument("--only-ceiling", action="store_true", help="skip the dask runs")
    a = ap.parse_args()
    utts = repeated(a.repeat)
    audio_s = sum(u.duration for u in utts)
    with tempfile.TemporaryDirectory() as tmp:
        man = write_manifest(utts, Path(tmp) / "m.jsonl")
        store = Path(tmp) / "s.zarr"
        extract(man, store, load_config("mel80-16k"), with_mag=True, shard_seconds=a.shard_seconds,
                progress=False)
        shards = len(Store(store).shard_names())
        out = {"audio_seconds": round(audio_s, 1), "shards": shards}
        # the real work without dask: phase_shard over the first 40 shards in one plain
        # process, then split over two (spawned processes, imports excluded from the timing)
        ctx = multiprocessing.get_context("spawn")
        names = Store(store).shard_names()[:40]
        real = []
        for r in range(a.ceiling_repeats):
            with ctx.Pool(1) as p:
                alone = p.starmap(_shards_work, [(str(store), f"{tmp}/c1-{r}", names)])[0]
            with ctx.Pool(2) as p:
                both = p.starmap(_shards_work, [(str(store), f"{tmp}/c2-{r}", names[0::2]),
                                                (str(store), f"{tmp}/c2-{r}", names[1::2])])
            # throughput ratio: each process times all but its first (warm-up) shard
            real.append(round((len(names) - 2) / max(both) / ((len(names) - 1) / alone), 2))
        out["no_dask_phase_shards_2_processes_vs_1"] = real
        if a.only_ceiling:
            _ceiling(out, a.ceiling_repeats)
            print(json.dumps(out, indent=1))
            return
        # default threads: 1 worker x 2 torch threads vs 2 workers x 1; then 1 x 1 vs 2 x 1
        for w, th in ((1, None), (2, None), (1, 1)):
            t = time.perf_counter()
            r = phase(store, Path(tmp) / f"w{w}-{th}", "fgla", n_iter=100, source="true",
                      workers=w, threads=th, progress=False)
            dt = time.perf_counter() - t
            assert r.ok
            out[f"workers{w}_threads{th or 'auto'}_seconds"] = round(dt, 2)
        out["workers1_seconds"] = out["workers1_threadsauto_seconds"]
        out["speedup_2_vs_1"] = round(out["workers1_threadsauto_seconds"] / out["workers2_threadsauto_seconds"], 2)
        out["speedup_2_vs_1_one_thread_each"] = round(out["workers1_threads1_seconds"] / out["workers2_threadsauto_seconds"], 2)
        out["per_shard_seconds_1worker"] = round(out["workers1_seconds"] / shards, 3)
        t = time.perf_counter()
        with local_client(2) as c:
            t_up = time.perf_counter() - t
            t = time.perf_counter()
            c.gather(c.map(lambda x: x, range(200)))
            per_task = (time.perf_counter() - t) / 200
        out["cluster_startup_seconds"] = round(t_up, 2)
        # the same dask machinery both ways: warm clusters of 1 and 2 single-threaded workers
        # (imports done) on the same 40 shards, no start-up in the timing
        names = Store(store).shard_names()[:40]
        for nw in (1, 2):
            with local_client(nw) as c:
                c.run(lambda: __import__("pipeline.phase.stage"))
                t = time.perf_counter()
                run_shards(c, fgla_job(store, Path(tmp) / f"warm{nw}"), names)
                out[f"warm_cluster_{nw}_workers_40_shards_seconds"] = round(time.perf_counter() - t, 2)
        out["warm_speedup_2_vs_1"] = round(out["warm_cluster_1_workers_40_shards_seconds"]
                                           / out["warm_cluster_2_workers_40_shards_seconds"], 2)
        # dask with 1 vs 2 workers end to end: a fresh LocalCluster each (start-up, imports and
        # shut-down included), all shards
        for nw in (1, 2):
            t = time.perf_counter()
            with local_client(nw) as c:
                run_shards(c, fgla_job(store, Path(tmp) / f"cold{nw}"), Store(store).shard_names())
            out[f"cold_cluster_{nw}_workers_all_shards_seconds"] = round(time.perf_counter() - t, 2)
        out["cold_speedup_2_vs_1"] = round(out["cold_cluster_1_workers_all_shards_seconds"]
                                           / out["cold_cluster_2_workers_all_shards_seconds"], 2)
        out["scheduler_overhead_per_task_ms"] = round(per_task * 1000, 2)
    _ceiling(out, a.ceiling_repeats)
    print(json.dumps(out, indent=1))


def _ceiling(out: dict, repeats: int) -> None:
    ctx = multiprocessing.get_context("spawn")
    ceilings = []
    for _ in range(repeats):
        with ctx.Pool(1) as p:
            alone = p.map(_fgla_work, [0])[0]
        with ctx.Pool(2) as p:
            both = p.map(_fgla_work, [0, 1])
        ceilings.append(round(2 * alone / max(both), 2))
    out["no_dask_2_processes_vs_1_throughput"] = ceilings


def _shards_work(store: str, dest: str, names: list[str]) -> float:
    """Seconds for the phase stage's own shard task (FGLA 100, 1 thread) over ``names``."""
    from pipeline.phase.stage import phase_shard
    job = fgla_job(store, dest)
    phase_shard(job, names[0])          # warm-up: first-call costs out of the timing
    t = time.perf_counter()
    for n in names[1:]:
        phase_shard(job, n)
    return time.perf_counter() - t


def _fgla_work(_) -> float:
    """Seconds for 600 FGLA iterations on a fixed [8, 256, 513] batch with 1 torch thread."""
    import torch
    from pipeline.phase.gla import initial_phase, iterate
    from pipeline.phase.stft import FramePair
    torch.set_num_threads(1)
    cfg = load_config("mel80-16k")
    g = torch.Generator().manual_seed(0)
    mag = torch.rand(8, 256, cfg.n_freq, generator=g)
    pair = FramePair(cfg, 256, torch.full((8,), 256 * cfg.hop_length), "cpu", torch.float32)
    x = mag * initial_phase(mag, "zeros", g, cfg)
    iterate(x, mag, pair, 10)
    t = time.perf_counter()
    for _ in range(6):
        iterate(x, mag, pair, 100)
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
