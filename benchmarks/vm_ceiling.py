"""What two busy cores of this machine are worth, with no dask and no stage code at all.

The same fixed work done by one process, then split over two processes started at once
(forked; each single-threaded), in interleaved pairs (order alternating); ratio = one's
seconds / two's. Two kinds of work: ``python`` (an integer loop: no memory traffic, no
library) and ``fft`` (torch.stft + istft of a 4 s signal at 16 kHz, the FGLA iteration's
shape: n_fft 1024, hop 256). Ideal 2.0; anything lower is the host (shared caches, clock
boost with one core busy, neighbours on the physical machine).

    .venv/bin/python benchmarks/vm_ceiling.py [--pairs 5] [--seconds 4]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import time


def _python(units: int) -> None:
    s = 0
    for i in range(units * 1_000_000):
        s += i


def _fft(units: int) -> None:
    import torch
    torch.set_num_threads(1)
    x = torch.randn(4 * 16000)
    w = torch.hann_window(1024)
    for _ in range(units * 10):
        s = torch.stft(x, 1024, 256, window=w, return_complex=True)
        x = torch.istft(s, 1024, 256, window=w, length=x.shape[0])


KINDS = {"python": _python, "fft": _fft}


def _run(fn, units: int, procs: int) -> float:
    ctx = mp.get_context("fork")
    ps = [ctx.Process(target=fn, args=(units // procs,)) for _ in range(procs)]
    t = time.perf_counter()
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=4.0, help="about how long one process runs")
    a = ap.parse_args()
    import torch  # noqa: F401  (imported once here, not in every forked child's timing)
    out = {}
    for kind, fn in KINDS.items():
        probe = _run(fn, 2, 1)                                 # calibrate units to --seconds
        units = max(2, 2 * round(a.seconds / probe))
        ratios = []
        for k in range(a.pairs):
            if k % 2:
                two = _run(fn, units, 2)
                one = _run(fn, units, 1)
            else:
                one = _run(fn, units, 1)
                two = _run(fn, units, 2)
            ratios.append(round(one / two, 3))
            print(kind, {"1": round(one, 2), "2": round(two, 2), "ratio": ratios[-1]}, flush=True)
        out[kind] = {"ratios": ratios, "median": statistics.median(ratios)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
