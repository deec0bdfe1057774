"""GPU figures for scripts/gpu-check.sh: batched FGLA 100 at large batch sizes, the learned
inverter's forward pass, and the phase stage's routes on the GPU (the fast route, model +
FGLA 100; the default route, pinv + joint mel inversion up to 800 iterations with its --tol;
the same with --tol 0), as real-time factors (and the routes' mean iterations) with the peak
GPU memory of each. Real speech: the test corpus, tiled
into 10 s items.

    python benchmarks/gpu.py [--out gpu-check.json]
"""
from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.algorithms.gla import fgla
from pipeline.config import load_config
from pipeline.dsp.mel import mel_from_magnitude, ragged_batch, stft
from pipeline.io.audio import load
from pipeline.io.manifest import write_manifest
from pipeline.models.inverter import load_invert_model
from pipeline.recipes.pocketsphinx import prepare_pocketsphinx


def sync_time(fn) -> tuple[float, float]:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t, torch.cuda.max_memory_allocated() / 2**30


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="gpu-check.json")
    a = ap.parse_args()
    dev = torch.device("cuda")
    cfg = load_config("mel80-16k")
    y = np.concatenate([load(u.path, 16000) for u in prepare_pocketsphinx()])
    item = 10 * cfg.sample_rate
    res: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    for batch in (16, 64, 256, 1024):
        waves = [np.roll(y, 7919 * k)[:item] for k in range(batch)]
        x, n = ragged_batch(waves, cfg)
        mag = stft(x.to(dev), cfg, padded=True).abs().transpose(1, 2).contiguous()
        lengths = torch.tensor(n)
        fgla(mag[:2], lengths[:2], cfg, 2)                          # warm-up
        sec, gib = sync_time(lambda m=mag: fgla(m, lengths, cfg, 100))
        res[f"fgla100_batch{batch}"] = {"rtf": round(sec / (batch * 10), 6),
                                        "x_real_time": round(batch * 10 / sec, 1),
                                        "peak_gib": round(gib, 2)}
        if batch in (64, 1024):
            model = load_invert_model(None, cfg, dev)
            mel = mel_from_magnitude(mag.transpose(1, 2), cfg).transpose(1, 2).contiguous()
            with torch.inference_mode():
                model(mel[:2])
                sec, gib = sync_time(lambda: model(mel))
            res[f"inverter_batch{batch}"] = {"x_real_time": round(batch * 10 / sec, 1),
                                             "peak_gib": round(gib, 2)}
        print(json.dumps(res), flush=True)
        del mag
        torch.cuda.empty_cache()
    from pipeline.stages.extract import extract
    from pipeline.stages.phase import phase
    with tempfile.TemporaryDirectory() as tmp:
        man = write_manifest(prepare_pocketsphinx() * 1, Path(tmp) / "c.jsonl")
        store = Path(tmp) / "s.zarr"
        extract(man, store, cfg, progress=False)
        audio = sum(u.duration or 0 for u in prepare_pocketsphinx())
        for route, kw in (("model+fgla100", dict(source="mel", method="model", project="mag",
                                                 n_iter=100)),
                          ("default", dict(source="mel", method="pinv")),    # 800 max, --tol
                          ("pinv+joint800", dict(source="mel", method="pinv", tol=0.0))):
            t = time.perf_counter()
            phase(store, Path(tmp) / route, "fgla", device="cuda", progress=False, **kw)
            res[f"phase_{route}"] = {"rtf": round((time.perf_counter() - t) / audio, 4)}
            with (Path(tmp) / route / "phase-report.csv").open() as fh:
                its = [int(r["iterations"]) for r in csv.DictReader(fh)]
            res[f"phase_{route}"]["mean_iterations"] = round(sum(its) / len(its), 1)
    print(json.dumps(res, indent=1))
    Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
