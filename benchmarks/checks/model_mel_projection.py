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
import tempfile
from pathlib import Path

import numpy as np
import torch
from pesq import pesq

from pipeline.algorithms.joint import MelTarget, project_mel
from pipeline.config import load_config
from pipeline.io.audio import load
from pipeline.io.manifest import prepare_pocketsphinx
from pipeline.io.store import Store
from pipeline.models.inverter import load_invert_model
from pipeline.stages.extract import extract
from pipeline.stages.invert import invert_frames
from pipeline.stages.phase import reconstruct


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="mel80-16k")
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 3, 10])
    a = ap.parse_args()
    cfg = load_config(a.config)
    with tempfile.TemporaryDirectory() as tmp:
        man = Path(tmp) / "m.jsonl"
        prepare_pocketsphinx(man)
        extract(man, Path(tmp) / "s.zarr", cfg, with_mag=True, progress=False)
        store = Store(Path(tmp) / "s.zarr")
        ents, mels = zip(*store.iter_utterances("mel"))
        trues = [m for _, m in store.iter_utterances("mag_true")]
    refs = [load(e.source, cfg.sample_rate) for e in ents]
    lengths = [e.n_samples for e in ents]

    def quality(mags: list[np.ndarray]) -> float:
        waves = reconstruct(mags, lengths, cfg, "fgla", n_iter=100)
        return round(float(np.mean([pesq(16000, y, w, "wb") for y, w in zip(refs, waves)])), 3)

    mags = invert_frames(list(mels), cfg, "model", model=load_invert_model(None, cfg))
    print("model", quality(mags), "| true magnitude", quality(trues), flush=True)
    for steps in a.steps:
        moved = []
        for m, mel in zip(mags, mels):
            target = MelTarget.from_compressed(torch.from_numpy(mel)[None], cfg)
            target.start = torch.from_numpy(m)[None]
            moved.append(project_mel(target.start, target, "multiplicative", steps=steps)[0].numpy())
        print(f"model + mel projection, {steps} step(s)", quality(moved), flush=True)


if __name__ == "__main__":
    main()
