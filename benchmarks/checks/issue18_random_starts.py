"""Issue 18: the variants tried on 2026-12-01, scored from a zero phase and as the mean of 6
random FGLA starts (FGLA 100, magnitude fixed, test corpus). A single zero-phase run is too
noisy to rank them: a post-net changing the log-magnitude by at most 0.0034 moved the
zero-phase PESQ-WB from 3.344 to 3.276. Needs the runs/ folders the other checks write.

    PYTHONPATH=benchmarks .venv/bin/python benchmarks/checks/issue18_random_starts.py
"""
from __future__ import annotations

import numpy as np
import torch
from _corpus import StoredTestCorpus
from pesq import pesq
from postnet2d import PostNet2D

from pipeline.config import load_config
from pipeline.models.inverter import LOG_FLOOR, load_invert_model
from pipeline.stages.invert import invert_frames
from pipeline.stages.phase import reconstruct

RUNS = {"fglaloss-held": "runs/invert-fglaloss-mel80/invert-fglaloss-mel80.pt",
        "fglaloss-unrolled-3e-5": "runs/invert-fglaloss-unrolled-lr3e-5-mel80/"
                                  "invert-fglaloss-unrolled-lr3e-5-mel80.pt"}


def main() -> None:
    cfg = load_config("mel80-16k")
    corpus = StoredTestCorpus(cfg)

    def quality(mags: list[np.ndarray], init: str, seed: int) -> float:
        waves = reconstruct(mags, corpus.lengths, cfg, "fgla", n_iter=100, init=init, seed=seed)
        return float(np.mean([pesq(16000, y, w, "wb") for y, w in zip(corpus.refs, waves)]))

    base = load_invert_model(None, cfg)
    post = PostNet2D(base, cfg, 8, 4)
    post.load_state_dict(torch.load("runs/postnet2d-c8-l4/best.pt", weights_only=True))
    nets = {"shipped": base, "postnet2d": post.eval(),
            **{k: load_invert_model(p, cfg) for k, p in RUNS.items()}}
    with torch.inference_mode():
        mags = {k: invert_frames(corpus.mels, cfg, "model", model=m) for k, m in nets.items()}
    nnls = invert_frames(corpus.mels, cfg, "nnls")
    logs = [0.75 * np.log(a + LOG_FLOOR) + 0.25 * np.log(b + LOG_FLOOR)
            for a, b in zip(mags["shipped"], nnls)]
    mags["blend-0.75"] = [np.maximum(np.exp(x) - LOG_FLOOR, 0).astype(np.float32) for x in logs]
    for name, m in mags.items():
        starts = [quality(m, "random", s) for s in range(6)]
        print(f"{name}: zero {quality(m, 'zeros', 0):.3f} | 6 random starts "
              f"{np.mean(starts):.3f} +- {np.std(starts):.3f}", flush=True)


if __name__ == "__main__":
    main()
