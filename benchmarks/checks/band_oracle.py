"""Issue 18 diagnostic: where in frequency does the learned inverter lose its quality?

Each line is FGLA 100 (magnitude fixed, mean PESQ-WB over 3 random starts) on a magnitude
made of the TRUE magnitude in some bins and the shipped model's (no refinement) in the
others. "true below f" = the true magnitude below f Hz, the model's above; "true in a-b" =
the model's except bins a..b-1; "valleys" / "peaks" = in bins 3-39 (47-610 Hz) the model's
over-estimates / under-estimates replaced by the truth. An oracle, never a method: it says
where a better inverter would gain.

    PYTHONPATH=benchmarks .venv/bin/python benchmarks/checks/band_oracle.py
        [--manifest data/heldout-ru.jsonl]   (default: the test corpus)
"""
from __future__ import annotations

import argparse
import copy
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
from pesq import pesq

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
    ap.add_argument("--manifest", default=None)
    a = ap.parse_args()
    cfg = load_config("mel80-16k")
    with tempfile.TemporaryDirectory() as tmp:
        man = Path(a.manifest) if a.manifest else Path(tmp) / "m.jsonl"
        if not a.manifest:
            prepare_pocketsphinx(man)
        extract(man, Path(tmp) / "s.zarr", cfg, with_mag=True, progress=False)
        s = Store(Path(tmp) / "s.zarr")
        ents, mels = zip(*s.iter_utterances("mel"))
        trues = [m for _, m in s.iter_utterances("mag_true")]
    refs = [load(e.source, cfg.sample_rate) for e in ents]
    net = copy.copy(load_invert_model(None, cfg))
    net.hparams = replace(net.hparams, refine="")          # the network alone
    model = invert_frames(list(mels), cfg, "model", model=net)

    def score(mags) -> float:
        p = []
        for seed in (0, 1, 2):
            waves = reconstruct(mags, [e.n_samples for e in ents], cfg, "fgla", n_iter=100,
                                init="random", seed=seed)
            p += [pesq(16000, y, w, "wb") for y, w in zip(refs, waves)]
        return round(float(np.mean(p)), 3)

    def mix(take) -> list[np.ndarray]:
        return [np.where(take(t, m), t, m) for t, m in zip(trues, model)]

    bins = np.arange(cfg.n_freq)
    hz = bins * cfg.sample_rate / cfg.n_fft
    band = (bins >= 3) & (bins < 40)
    rows = [("true magnitude", trues), ("model", model)]
    rows += [(f"true below {f} Hz", mix(lambda t, m, f=f: np.broadcast_to(hz < f, t.shape)))
             for f in (250, 500, 1000, 2000, 4000)]
    rows += [(f"true in bins {lo}-{hi - 1}",
              mix(lambda t, m, lo=lo, hi=hi: np.broadcast_to((bins >= lo) & (bins < hi), t.shape)))
             for lo, hi in ((0, 5), (5, 16), (16, 32))]
    rows += [("valleys (bins 3-39) lowered to the truth", mix(lambda t, m: band & (t < m))),
             ("peaks (bins 3-39) raised to the truth", mix(lambda t, m: band & (t > m)))]
    for name, mags in rows:
        print(f"{name}: PESQ-WB {score(mags)}", flush=True)


if __name__ == "__main__":
    main()
