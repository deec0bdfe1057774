"""Spreading shard tasks over processes with dask.distributed (LocalCluster or SLURMCluster).

Stages hand :func:`run_tasks` a function and one argument tuple per shard. With one local
worker the tasks run in this process (no cluster start-up); otherwise a dask cluster runs them,
one single-threaded worker process per core share, torch threads set so that
workers x threads = cores.
"""
from __future__ import annotations

import contextlib
import os
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from pipeline.errors import UsageError
from pipeline.parallel import batching


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def _notice(text: str) -> None:
    """A one-line notice on stderr (what a run decided for the user, not an error)."""
    from rich.console import Console
    Console(stderr=True).print(f"[yellow]note:[/] {escape(text)}")


def threads_per_worker(workers: int, cluster: str = "local", profile: str | None = None) -> int:
    """torch threads per task: local cores / workers, or a SLURM job's cores / processes."""
    if cluster == "slurm":
        from pipeline.parallel.cluster import load_profile, worker_threads
        return worker_threads(load_profile(profile))
    return max(1, cpu_count() // max(1, workers))


@dataclass
class TaskResult:
    key: Any
    value: Any = None
    error: str | None = None


_MALLOC_TUNED = False


def tune_malloc() -> None:
    """Undo dask's MALLOC_TRIM_THRESHOLD_ in this worker process.

    distributed starts workers with ``MALLOC_TRIM_THRESHOLD_=65536`` (local clusters here no
    longer do, :data:`NANNY_ENV`; dask-jobqueue's SLURM workers still do); an explicit trim
    threshold switches off glibc's dynamic mmap threshold, so every large tensor of an FGLA
    iteration is mmapped and unmapped again: measured 9.5 s instead of 2.9 s for the same
    FGLA work in a worker. Raising both thresholds (glibc ``mallopt``) restores heap reuse.
    No-op where glibc is absent.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED or not os.environ.get("MALLOC_TRIM_THRESHOLD_"):
        return          # only where the variable was set (dask workers): a caller's own
    _MALLOC_TUNED = True  # process keeps its malloc settings
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)


# oneDNN, which runs torch's CPU convolutions, keeps a compiled kernel (with its reordered
# weights and scratch space) for every input shape it meets, up to 1024 of them. The inverter
# meets a new shape in almost every length bucket, so a worker grew with the corpus: in one
# process, phase over 185 shards (2.9 h) went from 358 to 736 MB; with 32 kept it stays at
# 390-424 MB, same speed (benchmarks/scale.py, BENCHMARKS.md). oneDNN reads the variable when it
# builds its first kernel, so it is set before any task runs; a value the user set is kept.
ONEDNN_CACHE_CAPACITY = 32


def bound_kernel_cache() -> None:
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_CACHE_CAPACITY))


def _guarded(fn: Callable, key: Any, args: tuple) -> TaskResult:
    tune_malloc()
    bound_kernel_cache()
    try:
        return TaskResult(key, fn(*args))
    except Exception as exc:  # one shard's bug must not lose the others: recorded, reported
        tb = traceback.format_exc(limit=3)
        return TaskResult(key, error=f"{type(exc).__name__}: {exc} | {tb.strip().splitlines()[-3:]}")


def progress_bar(disable: bool = False) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TaskProgressColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                    disable=disable, transient=False)


# Local clusters have no dashboard, so nothing reads the workers' profiler, GIL monitor or
# fast system polling: off or slowed down, and the event-loop health check runs every 1 s
# instead of 20 ms (an idle 2-worker cluster otherwise costs ~3 % of two cores). A loop blocked
# for longer than the 3 s limit is still reported.
QUIET_WORKERS = {"distributed.worker.profile.enabled": False,
                 "distributed.admin.system-monitor.interval": "5s",
                 "distributed.admin.system-monitor.gil.enabled": False,
                 "distributed.worker.memory.monitor-interval": "1s",
                 "distributed.admin.tick.interval": "1s"}


# Local workers are forked from a forkserver, not spawned: a spawned worker shuts down through
# a full interpreter exit with torch loaded (~0.6 s per cluster), a forked one in 0.04 s. The
# server holds no threads, so forking from it is safe where forking this process is not. It
# starts before the scheduler and imports the tasks' module (``preload``: torch with it), so
# that import overlaps the cluster's start-up instead of delaying each worker's first task.
#
# The nanny's environment leaves out dask's MALLOC_TRIM_THRESHOLD_=65536: it fixes glibc's
# mmap threshold, so every large tensor of an FGLA iteration is mmapped and unmapped again (5x
# slower, see tune_malloc). dask writes these variables into this process's own os.environ
# before starting a worker; local_client puts the environment back once the workers are up.
START_METHOD = {"distributed.worker.multiprocessing-method": "forkserver"}
NANNY_ENV = {"distributed.nanny.pre-spawn-environ": {
    "OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1, "OPENBLAS_NUM_THREADS": 1}}


def _start_forkserver(preload: Sequence[str]) -> None:
    """Start the workers' forkserver now (if not running yet), with dask's pre-spawn
    environment (read at library load: OMP_NUM_THREADS, ...), importing ``preload`` too."""
    import multiprocessing.forkserver as mpf

    import dask
    from distributed.utils import get_mp_context

    ctx = get_mp_context()    # sets dask's own preload list (distributed, numpy, ...) once
    if preload:
        have = list(getattr(getattr(mpf, "_forkserver", None), "_preload_modules", None)
                    or ["distributed"])
        ctx.set_forkserver_preload(have + [m for m in preload if m not in have])
    os.environ.update({k: str(v) for k, v in
                       dask.config.get("distributed.nanny.pre-spawn-environ").items()})
    # The server inherits an ignored SIGINT (kept across exec), so a Ctrl-C while it imports
    # torch does not print that import's traceback; its children, the workers, inherit it too.
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        mpf.ensure_running()
    finally:
        if main:
            signal.signal(signal.SIGINT, old)


@contextlib.contextmanager
def local_client(workers: int, quiet: bool = True, settings: dict | None = None,
                 preload: Sequence[str] = ()) -> Iterator[Any]:
    """A Client on a fresh LocalCluster of ``workers`` single-threaded worker processes,
    forked from a forkserver that has imported ``preload`` (``quiet``: with
    :data:`QUIET_WORKERS`; ``settings``: dask config on top, for the benchmarks). This
    process's environment is left as it was."""
    import dask
    from dask.distributed import Client, LocalCluster

    saved = dict(os.environ)
    try:
        with dask.config.set({**START_METHOD, **NANNY_ENV, **(QUIET_WORKERS if quiet else {}),
                              **(settings or {})}):
            _start_forkserver(preload)
            with _interrupts_deferred() as interrupted:
                # a Ctrl-C while the workers start waits for them: interrupted half-way, they
                # outlived this process and each printed a traceback
                # no dashboard; the scheduler's HTTP endpoint (health checks) on a free port
                # of the loopback, so that a second run beside this one neither warns that
                # 8787 is taken nor listens beyond this machine
                lc = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=40,
                                  scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                  preload=["pipeline.parallel.tasks"])
                client = Client(lc)
            with lc, client:
                if interrupted:
                    raise KeyboardInterrupt
                _restore_environ(saved)
                yield client
    finally:                # also when start-up fails, or a nanny restarted a lost worker
        _restore_environ(saved)


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[list[int]]:
    """SIGINT is held back inside the block and re-delivered after it, as KeyboardInterrupt at
    the caller's check of the yielded list (main thread only; elsewhere nothing changes)."""
    import signal
    import threading

    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return
    old = signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    try:
        yield got
    finally:
        signal.signal(signal.SIGINT, old)


def dask_setup(worker: Any) -> None:
    """Run by dask in each local worker process as it starts (``preload``): Ctrl-C reaches
    the whole process group, and the workers leave the interrupt to this process, which
    shuts the cluster down; interrupted themselves, each printed ~30 lines of traceback."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _restore_environ(saved: dict[str, str]) -> None:
    for k in set(os.environ) - set(saved):
        del os.environ[k]
    os.environ.update({k: v for k, v in saved.items() if os.environ.get(k) != v})


_SHARED: list[Any] = []   # the client of an enclosing shared_client(), if any


@contextlib.contextmanager
def shared_client(workers: int = 1, cluster: str = "local", profile: str | None = None,
                  preload: Sequence[str] = ()) -> Iterator[Any]:
    """One cluster for several stages (``pipeline run``): every :func:`run_tasks` inside uses
    it instead of starting its own (workers start, and import torch, once)."""
    with make_client(workers, cluster, profile, preload) as client:
        _SHARED.append(client)
        try:
            yield client
        finally:
            _SHARED.pop()


@contextlib.contextmanager
def make_client(workers: int = 1, cluster: str = "local", profile: str | None = None,
                preload: Sequence[str] = ()) -> Iterator[Any]:
    """A dask Client for ``workers`` processes, or ``None`` for in-process serial running
    (``preload``: modules local workers import before they start). Inside
    :func:`shared_client`, its client."""
    if _SHARED:
        yield _SHARED[-1]
        return
    if cluster == "local":
        # more local processes than cores only compete (64 workers on 2 cores: workers died
        # of memory, tasks failed, connection errors at exit)
        if workers > cpu_count():
            _notice(f"--workers {workers}: {cpu_count()} local worker(s) run, one per core "
                    "(more only compete for them; --cluster slurm spreads further)")
        workers = min(workers, cpu_count())
    if cluster == "local" and workers <= 1:
        yield None
        return
    from dask.distributed import Client

    if cluster == "local":
        with local_client(workers, preload=preload) as client:
            yield client
    elif cluster == "slurm":
        from pipeline.parallel.cluster import slurm_cluster

        with slurm_cluster(profile, jobs=workers) as sc, Client(sc) as client:
            yield client
    else:
        raise UsageError(f"unknown cluster {cluster!r}: use 'local' or 'slurm'")


def run_tasks(fn: Callable, tasks: Sequence[tuple[Any, tuple]], *, workers: int = 1,
              cluster: str = "local", profile: str | None = None, desc: str = "working",
              progress: bool = True, on_result: Callable[[TaskResult], None] | None = None,
              sizes: Mapping[Any, int] | None = None) -> list[TaskResult]:
    """Run ``fn(*args)`` for each ``(key, args)``; exceptions become ``TaskResult.error``.

    Results are returned in completion order and also passed to ``on_result`` as they arrive.
    The progress bar counts tasks, or ``sizes[key]`` units (utterances, say) per task.
    """
    results: list[TaskResult] = []
    sizes = sizes or {}
    with progress_bar(disable=not progress) as bar:
        tid = bar.add_task(escape(desc), total=sum(sizes.get(key, 1) for key, _ in tasks))
        with make_client(workers, cluster, profile, preload=[fn.__module__]) as client:
            if client is None:
                # in this process the algorithms' iterations move the bar within a task
                # (batching.tick); each finished task then sets it to the exact count
                batching.PROGRESS_HOOK = lambda share: bar.advance(tid, share)
                stream = (_guarded(fn, key, args) for key, args in tasks)
            else:
                from dask.distributed import as_completed

                futures = [client.submit(_guarded, fn, key, args, pure=False) for key, args in tasks]
                stream = (f.result() for f in as_completed(futures))
            done = 0.0
            try:
                for res in stream:
                    results.append(res)
                    if on_result is not None:
                        on_result(res)
                    done += sizes.get(res.key, 1)
                    bar.update(tid, completed=done)
            finally:
                batching.PROGRESS_HOOK = None
    return results
