"""DeGLI development check on validation speech: FGLA warm-up then k DeGLI blocks of a
trained net vs the same number of plain GLA steps (the zero-residual net) vs more FGLA
iterations, PESQ-WB and seconds. Uses a training run's ``best.pt``, so it works before any
weights are exported or shipped. True magnitudes by default; with ``--after-model WEIGHTS``
the magnitudes those inversion weights give from the store's mels (for a net trained with
``pipeline train degli --after-model``).

    .venv/bin/python benchmarks/checks/degli_check.py runs/NAME/best.pt --channels 8
        [--store data/val-mel80-16k.zarr] [--warmup 100] [--threads 2] [--after-model W]
        [--momentum 0.99] [--horizon 8] [--blocks 1 4 8] [--fgla N ...]

``--momentum``: a net trained with its blocks chained by FGLA's momentum (``pipeline train
degli --momentum 0.99``); its zero-residual comparison is then FGLA steps, not GLA steps.
``--horizon``: the net acts in the first N blocks only (as trained with ``--unroll N``).
``--fgla``: the FGLA iteration counts to time (default warmup, +50, +100).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from pipeline.io.audio import load
from pipeline.io.store import Store
from pipeline.metrics.registry import MetricError, pesq_wb
from pipeline.models.degli import DeGLIConfig, DeGLINet, degli
from pipeline.parallel.batching import stack_frames
from pipeline.synthesis import reconstruct


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("state")
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--store", default="data/val-mel80-16k.zarr")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--after-model", default=None)
    ap.add_argument("--utterances", type=int, default=20)
    ap.add_argument("--momentum", type=float, default=0.0)
    ap.add_argument("--horizon", type=int, default=0)
    ap.add_argument("--blocks", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--fgla", type=int, nargs="*", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    s = Store(a.store)
    cfg = s.config
    ents, mags = zip(*list(s.iter_utterances("mel" if a.after_model else "mag_true")))
    step = 3 * 20 // a.utterances if a.utterances <= 20 else max(len(ents) // a.utterances, 1)
    ents, mags = ents[:step * a.utterances:step], list(mags[:step * a.utterances:step])
    if a.after_model:    # mags holds mels: invert them
        from pipeline.models.inverter import load_invert_model
        from pipeline.synthesis import invert_frames
        mags = invert_frames(mags, cfg, "model", model=load_invert_model(a.after_model, cfg))
    refs = [load(e.source, cfg.sample_rate) for e in ents]
    n = [e.n_samples for e in ents]
    hp = DeGLIConfig(channels=a.channels, magnitude="model" if a.after_model else "true",
                     momentum=a.momentum, horizon=a.horizon)
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

    def timed(algo, n_iter, model=None, warmup=None):
        t = time.perf_counter()
        if algo == "degli":   # a given (unshipped) net: called directly, one padded batch
            x, pair = degli(stack_frames(mags), torch.tensor(n), cfg, n_iter, model=model,
                            warmup=warmup)
            w = [y.numpy() for y in pair.crop(x, list(n))]
        else:
            w = reconstruct(mags, n, cfg, algo, n_iter=n_iter)
        return quality(w), round(time.perf_counter() - t, 2)

    steps = "fgla-steps" if a.momentum else "gla-steps"
    for k in a.blocks:
        for name, m in (("degli", net.eval()), (steps, zero.eval())):
            print(f"warmup {a.warmup} + {k} {name}: PESQ %.3f, %.2f s" % timed(
                "degli", n_iter=k, model=m, warmup=a.warmup), flush=True)
    for it in a.fgla if a.fgla is not None else (a.warmup, a.warmup + 50, a.warmup + 100):
        print(f"fgla {it}: PESQ %.3f, %.2f s" % timed("fgla", n_iter=it), flush=True)


if __name__ == "__main__":
    main()
