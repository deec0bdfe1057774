"""PNG figures for reports: metric histograms and reference/estimate spectrogram pairs."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pipeline.metrics.registry import METRICS


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def spectrogram_pair(ref: np.ndarray | None, est: np.ndarray, sr: int, path: Path, title: str) -> Path:
    import librosa
    plt = _plt()
    panels = [("reference", ref), ("reconstruction", est)] if ref is not None else [("audio", est)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.6 * len(panels)), squeeze=False)
    for ax, (name, y) in zip(axes[:, 0], panels):
        S = librosa.amplitude_to_db(np.abs(librosa.stft(y, n_fft=512, hop_length=128)), ref=np.max)
        ax.imshow(S, origin="lower", aspect="auto", vmin=-80, vmax=0, cmap="magma",
                  extent=[0, len(y) / sr, 0, sr / 2000])
        ax.set_ylabel("kHz")
        ax.set_title(name, fontsize=9)
    axes[-1, 0].set_xlabel("s")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def score_plots(rows: list[dict], metrics: list[str], out_dir: Path, rate: int | None) -> list[Path]:
    from pipeline.io.audio import info, load
    plt = _plt()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for m in metrics:
        vals = [r[m] for r in rows if isinstance(r[m], float) and math.isfinite(r[m])]
        if not vals:
            continue
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.hist(vals, bins=min(30, max(5, len(vals) // 2)))
        ax.set_xlabel(m)
        ax.set_ylabel("utterances")
        ax.set_title(f"{m}: mean {np.mean(vals):.3f} (n={len(vals)})", fontsize=9)
        fig.tight_layout()
        p = out_dir / f"hist_{m}.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths.append(p)
    key = metrics[0]
    ranked = sorted((r for r in rows if isinstance(r[key], float) and math.isfinite(r[key])),
                    key=lambda r: r[key], reverse=not METRICS[key].lower_is_better)
    for tag, r in (("best", ranked[0] if ranked else None), ("worst", ranked[-1] if ranked else None)):
        if r is None:
            continue
        sr = rate or info(r["hyp"])["sample_rate"]
        est = load(r["hyp"], sr)
        ref = load(r["ref"], sr) if r["ref"] else None
        safe = r["id"].replace("/", "__")
        paths.append(spectrogram_pair(ref, est, sr, out_dir / f"{tag}_{safe}.png",
                                      f"{tag} by {key}: {r['id']} ({key} {r[key]:.3f})"))
    return paths
