"""Issue 18's inverter speed, in process: ``invert_frames`` over a store's mels (buckets of
1000 frames, as ``pipeline invert`` runs them) and the net + refinement on 16 x 1000 random
frames (``PInvConvSkip.magnitude``), for each weights file, alternated, medians of 4 / 5.

    .venv/bin/python benchmarks/checks/inverter_speed.py STORE WEIGHTS [WEIGHTS ...]

STORE: e.g. `pipeline extract` of `benchmarks/_corpus.repeated(13)` (605.6 s, 37,960 frames).
"""
from __future__ import annotations

import sys
import time

import numpy as np
import torch

from pipeline.io.store import Store
from pipeline.models.inverter import load_invert_model
from pipeline.stages.invert import invert_frames


def main() -> None:
    store = Store(sys.argv[1])
    cfg = store.config
    ents, mels = zip(*store.iter_utterances("mel"))
    seconds = sum(e.n_samples for e in ents) / cfg.sample_rate
    nets = {w: load_invert_model(w, cfg) for w in sys.argv[2:]}
    times: dict[str, list[float]] = {w: [] for w in nets}
    for _ in range(4):
        for w, m in nets.items():
            t0 = time.perf_counter()
            invert_frames(list(mels), cfg, "model", model=m)
            times[w].append(time.perf_counter() - t0)
    x = torch.randn(16, 1000, cfg.n_mels) - 4
    for w, m in nets.items():
        med = float(np.median(times[w]))
        with torch.inference_mode():
            m.magnitude(x)
            ts = []
            for _ in range(5):
                t0 = time.perf_counter()
                m.magnitude(x)
                ts.append(time.perf_counter() - t0)
        batch_s = 16 * 1000 * cfg.hop_length / cfg.sample_rate
        print(f"{w}: invert_frames {med:.3f} s = {seconds / med:.0f}x real time "
              f"({', '.join(f'{t:.2f}' for t in times[w])}); 16 x 1000 frames "
              f"{batch_s / float(np.median(ts)):.0f}x", flush=True)


if __name__ == "__main__":
    main()
