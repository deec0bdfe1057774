"""Timing shared by the checks' scripts (importable beside them: a script's folder is on its path)."""
from __future__ import annotations

import time


def best_of(fn, n: int = 5) -> float:
    """Seconds of the fastest of ``n`` calls of ``fn``, after one untimed warm-up call."""
    fn()
    out = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t)
    return out
