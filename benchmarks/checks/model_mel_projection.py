"""Issue 18, a direction tried: move the learned inverter's magnitude onto the mel it came
from (``project_mel``, multiplicative, 1/3/10 steps) before a fixed-magnitude FGLA 100, zero
phase. PESQ-WB on the test corpus beside the plain model and the true magnitude.

    PYTHONPATH=benchmarks .venv/bin/python benchmarks/checks/model_mel_projection.py
        [--config mel80-16k] [--steps 1 3 10]

Measured (BENCHMARKS.md, learned inverter): model 3.356, +1 step 3.352, +3 steps 3.241,
+10 steps 3.263; true magnitude 4.186. Forcing the mel does not recover the harmonic detail
the model misses: it rescales whole bands, and FGLA then fits a magnitude further from the
truth. Not adopted.
"""
from __future__ import annotations

import argparse

import torch
from _corpus import StoredTestCorpus

from pipeline.algorithms.joint import MelTarget, project_mel
from pipeline.config import load_config
from pipeline.models.inverter import load_invert_model
from pipeline.stages.invert import invert_frames


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="mel80-16k")
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 3, 10])
    a = ap.parse_args()
    cfg = load_config(a.config)
    corpus = StoredTestCorpus(cfg, with_mag=True)
    mels = corpus.mels
    mags = invert_frames(mels, cfg, "model", model=load_invert_model(None, cfg))
    print("model", corpus.fgla_pesq(mags), "| true magnitude", corpus.fgla_pesq(corpus.trues),
          flush=True)
    for steps in a.steps:
        moved = []
        for m, mel in zip(mags, mels):
            target = MelTarget.from_compressed(torch.from_numpy(mel)[None], cfg)
            target.start = torch.from_numpy(m)[None]
            moved.append(project_mel(target.start, target, "multiplicative", steps=steps)[0].numpy())
        print(f"model + mel projection, {steps} step(s)", corpus.fgla_pesq(moved), flush=True)


if __name__ == "__main__":
    main()
