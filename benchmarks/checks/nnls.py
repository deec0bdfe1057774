"""NNLS mel -> magnitude: ours (batched FISTA in torch) vs librosa.feature.inverse.mel_to_stft
(L-BFGS-B per file), same run, test corpus at 80 mels. Also the agreement between the two.

    PYTHONPATH=benchmarks .venv/bin/python benchmarks/checks/nnls.py
"""
from __future__ import annotations

import json
import time

import librosa
import numpy as np
from _corpus import true_magnitudes

from pipeline.config import load_config
from pipeline.dsp.mel import _filterbank_np
from pipeline.synthesis import invert_frames


def main():
    cfg = load_config("mel80-16k")
    ys, mags, lengths, audio_s = true_magnitudes(cfg)
    A = _filterbank_np(cfg)
    mels = [np.log(np.maximum(m @ A.T, cfg.clamp)).astype(np.float32) for m in mags]
    invert_frames(mels[:1], cfg, "nnls")
    t = time.perf_counter()
    ours = invert_frames(mels, cfg, "nnls")
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    ref = [librosa.feature.inverse.mel_to_stft(np.exp(m.T), sr=cfg.sample_rate, n_fft=cfg.n_fft,
                                               power=1.0).T for m in mels]
    t_lib = time.perf_counter() - t
    resid = lambda X, m: np.linalg.norm(X @ A.T - np.exp(m)) / np.linalg.norm(np.exp(m))
    print(json.dumps({
        "audio_seconds": round(audio_s, 1), "ours_seconds": round(t_ours, 3),
        "librosa_seconds": round(t_lib, 3), "speedup": round(t_lib / t_ours, 1),
        "mel_residual_ours": float(np.mean([resid(o, m) for o, m in zip(ours, mels)])),
        "mel_residual_librosa": float(np.mean([resid(r, m) for r, m in zip(ref, mels)])),
        "sc_ours_vs_librosa": round(float(np.mean([np.linalg.norm(o - r) / np.linalg.norm(r)
                                                   for o, r in zip(ours, ref)])), 4),
    }, indent=1))


if __name__ == "__main__":
    main()
