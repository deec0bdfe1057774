"""DeGLI development check on validation speech (true magnitudes): FGLA warm-up then k DeGLI
blocks of a trained net vs the same number of plain GLA steps (the zero-residual net) vs more
FGLA iterations, PESQ-WB and seconds. Uses a training run's ``best.pt``, so it works before any
weights are exported or shipped.

    .venv/bin/python benchmarks/degli_check.py runs/NAME/best.pt --channels 8
        [--store data/val-mel80-16k.zarr] [--warmup 100] [--threads 2]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from pipeline.audio import load
from pipeline.metrics import MetricError, pesq_wb
from pipeline.phase import reconstruct
from pipeline.phase.degli import DeGLIConfig, DeGLINet
from pipeline.store import Store


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("state")
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--store", default="data/val-mel80-16k.zarr")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    s = Store(a.store)
    cfg = s.config
    ents, mags = zip(*list(s.iter_utterances("mag_true")))
    ents, mags = ents[:60:3], list(mags[:60:3])        # 20 utterances spread over the store
    refs = [load(e.source, cfg.sample_rate) for e in ents]
    n = [e.n_samples for e in ents]
    hp = DeGLIConfig(channels=a.channels)
    net = DeGLINet(cfg, hp)
    net.load_state_dict(torch.load(a.state, map_location="cpu", weights_only=True))
    zero = DeGLINet(cfg, hp)

    def quality(w):
        out = []
        for y, o in zip(refs, w):
            try:
                out.append(pesq_wb(reference=y, estimate=o, sample_rate=cfg.sample_rate))
            except MetricError:   # e.g. no utterance found in a near-silent file
                pass
        return round(float(np.mean(out)), 3)

    def timed(*args, **kw):
        t = time.perf_counter()
        w = reconstruct(mags, n, cfg, *args, **kw)
        return quality(w), round(time.perf_counter() - t, 2)

    for k in (1, 4, 8):
        for name, m in (("degli", net.eval()), ("gla-steps", zero.eval())):
            print(f"warmup {a.warmup} + {k} {name}: PESQ %.3f, %.2f s" % timed(
                "degli", n_iter=k, model=m, warmup=a.warmup), flush=True)
    for it in (a.warmup, a.warmup + 50, a.warmup + 100):
        print(f"fgla {it}: PESQ %.3f, %.2f s" % timed("fgla", n_iter=it), flush=True)


if __name__ == "__main__":
    main()
