"""Inversion quality on the test corpus (pocketsphinx-testdata, never trained on).

For each method: magnitude distances to the true STFT magnitude (spectral convergence, LSD)
and speech quality after FGLA (100 iterations, zero initial phase): PESQ-WB and STOI. The
reference point is librosa.feature.inverse.mel_to_audio (NNLS + librosa's Griffin-Lim, 100
iterations), computed in the same run.

``--seeds N`` also runs FGLA from N random initial phases (seeds 0..N-1) and reports the
mean and standard deviation of PESQ/STOI over them: on 14 utterances, which start FGLA
happens to take moves the corpus mean by +-0.02-0.03 PESQ for the same magnitudes, and the
zero-phase figure is one such draw.

    .venv/bin/python benchmarks/invert.py --config mel80-16k [--methods pinv nnls model]
        [--weights PATH] [--seeds 6]
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import librosa
import numpy as np
from _corpus import save_results
from pesq import pesq
from pystoi import stoi

from pipeline.config import load_config
from pipeline.io.audio import load
from pipeline.io.store import Store
from pipeline.models.inverter import load_invert_model
from pipeline.recipes.pocketsphinx import prepare_pocketsphinx
from pipeline.stages.extract import extract
from pipeline.synthesis import invert_frames, reconstruct


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="mel80-16k")
    ap.add_argument("--methods", nargs="+", default=["pinv", "nnls", "model"])
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--no-librosa", action="store_true")
    ap.add_argument("--weights", default=None, help="model weights (default: shipped for --config)")
    ap.add_argument("--seeds", type=int, default=0, help="also N random initial phases")
    ap.add_argument("--manifest", default=None, help="another corpus (default: the test corpus), "
                    "e.g. data/heldout-ru.jsonl for the held-out Russian voice")
    ap.add_argument("--name", default="", help="results file suffix (default: the config)")
    a = ap.parse_args()
    cfg = load_config(a.config)
    with tempfile.TemporaryDirectory() as tmp:
        man = Path(a.manifest) if a.manifest else Path(tmp) / "m.jsonl"
        if not a.manifest:
            prepare_pocketsphinx(man)
        store = Path(tmp) / "s.zarr"
        extract(man, store, cfg, with_mag=True, progress=False)
        s = Store(store)
        ents, mels = zip(*s.iter_utterances("mel"))
        trues = [m for _, m in s.iter_utterances("mag_true")]
    refs = [load(e.source, cfg.sample_rate) for e in ents]
    sr = cfg.sample_rate

    def quality(waves):
        y16 = [load_resampled(y, sr) for y in refs]
        w16 = [load_resampled(w, sr) for w in waves]
        return (float(np.mean([pesq(16000, y, w, "wb") for y, w in zip(y16, w16)])),
                float(np.mean([stoi(y, w, 16000) for y, w in zip(y16, w16)])))

    out = {"config": cfg.name, "utterances": len(ents), "iters": a.iters}
    for method in a.methods:
        model = load_invert_model(a.weights, cfg) if method == "model" else None
        mags = invert_frames(list(mels), cfg, method, model=model)
        sc = np.mean([np.linalg.norm(m - t) / np.linalg.norm(t) for m, t in zip(mags, trues)])
        lsd = np.mean([np.mean(np.sqrt(np.mean((20 * np.log10(np.maximum(t, 1e-5) / np.maximum(m, 1e-5))) ** 2, -1)))
                       for m, t in zip(mags, trues)])
        waves = reconstruct(mags, [e.n_samples for e in ents], cfg, "fgla", n_iter=a.iters)
        p, st = quality(waves)
        out[method] = {"sc": round(float(sc), 4), "lsd_db": round(float(lsd), 3),
                       "pesq_wb": round(p, 3), "stoi": round(st, 4)}
        if a.seeds:
            q = np.array([quality(reconstruct(mags, [e.n_samples for e in ents], cfg, "fgla",
                                              n_iter=a.iters, init="random", seed=k))
                          for k in range(a.seeds)])
            out[method]["random_init"] = {
                "seeds": a.seeds, "pesq_wb_mean": round(float(q[:, 0].mean()), 3),
                "pesq_wb_sd": round(float(q[:, 0].std(ddof=1)), 3) if a.seeds > 1 else None,
                "pesq_wb_min_max": [round(float(q[:, 0].min()), 3), round(float(q[:, 0].max()), 3)],
                "stoi_mean": round(float(q[:, 1].mean()), 4)}
        print(method, out[method], flush=True)
    if not a.no_librosa:
        waves = []
        for e, mel in zip(ents, mels):
            M = np.exp(mel.T) if cfg.log == "ln" else None
            waves.append(librosa.feature.inverse.mel_to_audio(
                M, sr=sr, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
                center=cfg.center, pad_mode=cfg.pad_mode, power=cfg.power, n_iter=a.iters,
                fmin=cfg.fmin, fmax=cfg.fmax, length=e.n_samples))
        p, st = quality(waves)
        out["librosa_mel_to_audio"] = {"pesq_wb": round(p, 3), "stoi": round(st, 4)}
        print("librosa", out["librosa_mel_to_audio"], flush=True)
    print(json.dumps(out, indent=1))
    save_results(f"invert-{a.name or a.config}", out)


def load_resampled(y, sr):
    return y if sr == 16000 else librosa.resample(y, orig_sr=sr, target_sr=16000, res_type="soxr_hq")


if __name__ == "__main__":
    main()
