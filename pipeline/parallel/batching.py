"""Length bucketing and device choice for batched torch work over ragged utterances."""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import torch

from pipeline.errors import UsageError


def buckets(lengths: list[int], max_frames: int = 4000) -> list[list[int]]:
    """Group indices of similar length so that ``len(group) * longest <= max_frames``.

    Sorted longest first; a group never pads an item by more than the spread of its
    neighbours' lengths. An item longer than ``max_frames`` gets a group of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    out: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        if cur and (len(cur) + 1) * lengths[cur[0]] > max_frames:
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    return out


Batch = TypeVar("Batch")

# Ctrl-C between iterations: the main thread sets STOP when interrupted while batches run on
# other threads (which Python's KeyboardInterrupt never reaches); every iteration of the
# phase algorithms calls tick(), which raises there. tick() also moves the progress bar of an
# in-process run within long items: each call adds this thread's share of its task (set by
# progress_share, in the task's unit) to PROGRESS_HOOK.
STOP = threading.Event()
PROGRESS_HOOK: Callable[[float], None] | None = None
_share = threading.local()


def tick() -> None:
    """One iteration done: stop here if the run was interrupted; advance the progress."""
    if STOP.is_set():
        raise KeyboardInterrupt
    hook, share = PROGRESS_HOOK, getattr(_share, "value", 0.0)
    if hook is not None and share:
        hook(share)


@contextlib.contextmanager
def progress_share(value: float) -> Iterator[None]:
    """Each :func:`tick` on this thread inside the block is worth ``value`` of progress."""
    before = getattr(_share, "value", 0.0)
    _share.value = value
    try:
        yield
    finally:
        _share.value = before


def for_each_batch(fn: Callable[[Batch], None], batches: Sequence[Batch], device: torch.device) -> None:
    """``fn(batch)`` for every batch. On a CPU with ``n > 1`` torch threads: on ``n`` Python
    threads, torch single-threaded in each (restored after), so each core takes the next
    batch when done instead of every op splitting across the cores and waiting for the
    slower one. The results are the same (each batch is computed alone, its own seed). On the
    2-vCPU VMs of this project the gain is within their noise (BENCHMARKS.md, end to end).
    Torch's thread count is process-wide: not for callers that run torch on other threads
    meanwhile."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads < 2 or len(batches) < 2:
        for b in batches:
            fn(b)
        return
    torch.set_num_threads(1)
    ex = ThreadPoolExecutor(threads, thread_name_prefix="pipeline-batch")
    try:
        for _ in ex.map(fn, batches):   # re-raises a batch's exception here
            pass
    except KeyboardInterrupt:
        STOP.set()                      # the running batches stop at their next iteration
        raise
    finally:
        ex.shutdown(wait=True, cancel_futures=True)   # e.g. Ctrl-C: start no more batches
        STOP.clear()
        torch.set_num_threads(threads)


def stack_frames(items: list[np.ndarray], fill: float = 0.0) -> torch.Tensor:
    """``[T_i, D]`` arrays -> ``[B, T_max, D]`` tensor padded with ``fill``."""
    T = max(a.shape[0] for a in items)
    out = np.full((len(items), T, items[0].shape[1]), fill, np.float32)
    for i, a in enumerate(items):
        out[i, :a.shape[0]] = a
    return torch.from_numpy(out)


# Padded frames per phase batch: small on CPU, where a batch that stays in cache is fastest
# (FGLA RTF 0.024 at 256 frames vs 0.062 at 4000, benchmarks/phase.py); large on a GPU, which
# needs many frames in flight to be busy.
PHASE_BATCH_FRAMES = {"cpu": 256, "cuda": 16384}


def phase_batch_frames(device: torch.device) -> int:
    return PHASE_BATCH_FRAMES.get(device.type, PHASE_BATCH_FRAMES["cpu"])


def workers_for(device: str, workers: int) -> int:
    """One process drives a GPU; CPU work keeps the requested number of workers."""
    return 1 if device != "cpu" and resolve_device(device).type == "cuda" else workers


def resolve_device(device: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU. ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
    return torch.device(device)
