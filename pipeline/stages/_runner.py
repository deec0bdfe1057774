"""The skeleton every stage shares: run the planned tasks (locally or on a cluster), count
what they did, turn a crashed task into one failure per item, gather the failures the tasks
recorded, write the failures CSV, time the run.

A stage plans its own tasks (which shards or files are still to do: that is what makes it
resumable) and calls :func:`run_stage`. Each task returns a dict with ``n`` (items done),
``seconds`` (audio seconds done) and optionally ``failures`` (:class:`Failure` or its dict).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pipeline.errors import DiskFullError
from pipeline.io.results import Failure, StageResult, write_failures
from pipeline.parallel.tasks import TaskResult, run_tasks

# Below this much free space at the output after a task failed, the failure is the disk's:
# one line and exit status 3, not a failures CSV blaming every item (which could not be
# written anyway).
MIN_FREE_BYTES = 16 << 20


def check_space(folder: Path, results: Sequence[TaskResult]) -> None:
    """Raise :class:`DiskFullError` when tasks failed and ``folder``'s file system is full."""
    import errno
    import shutil

    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    said = any(r.error and (f"[Errno {errno.ENOSPC}]" in r.error or "No space left" in r.error)
               for r in results)
    if said or free < MIN_FREE_BYTES:
        raise DiskFullError(f"no space left on device: {folder} ({free >> 20} MiB free); what "
                            "was finished is kept (each output is written whole or not at "
                            "all): free some space and re-run the same command to finish")


def run_stage(task: Callable, tasks: Sequence[tuple[Any, tuple]], res: StageResult, *,
              stage: str, items_of: Callable[[Any], list[dict]], failures_csv: Path,
              desc: str, t0: float, workers: int = 1, cluster: str = "local",
              profile: str | None = None, progress: bool = True,
              sizes: Mapping[Any, int] | None = None, label: Callable[[Any], str] | None = None,
              recorded: Callable[[], list[Failure]] = list) -> list[TaskResult]:
    """Run ``tasks`` (``(key, args)`` pairs) with ``task`` and fill ``res``.

    ``items_of(key)``: the ``{"id", "path"}`` items of a task (for the failures of a crashed
    one); ``label(key)``: how such a failure names the task; ``recorded()``: failures the
    tasks stored elsewhere (in the store's attributes), read after the run. ``res.failures``
    already holding some (found while planning) keeps them first.
    """
    extra: dict = {"sizes": sizes} if sizes is not None else {}
    results = run_tasks(task, tasks, workers=workers, cluster=cluster, profile=profile,
                        desc=desc, progress=progress, **extra)
    if any(r.error for r in results):
        check_space(failures_csv.parent, results)
    crashed = res.absorb(results, items_of, stage, label)
    returned = [f if isinstance(f, Failure) else Failure(**f)
                for r in results if not r.error for f in r.value.get("failures", [])]
    res.failures = [*res.failures, *recorded(), *returned, *crashed]
    res.failures_csv = write_failures(res.failures, failures_csv)
    res.seconds = time.perf_counter() - t0
    return results
