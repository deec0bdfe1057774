"""Spread (99th - 5th percentile) of speech mels in the ln and log10 conventions: the figures
behind vocode's convention check (pipeline/vocode.py: SPREAD_GAP).

    .venv/bin/python benchmarks/checks/mel_spread.py

The test corpus, plus 6 prompts each of data/heldout-ru.jsonl and data/tune-en.jsonl where they
exist (the held-out and tuning sets of BENCHMARKS.md's joint mel inversion section).
"""
from pathlib import Path

import numpy as np
import torch

from pipeline.config import load_config
from pipeline.dsp.mel import mel_spectrogram
from pipeline.io.audio import load
from pipeline.io.manifest import read_manifest

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    utts = read_manifest(REPO / "manifests" / "pocketsphinx.jsonl")
    for extra in ("data/heldout-ru.jsonl", "data/tune-en.jsonl"):
        if (REPO / extra).exists():
            utts += read_manifest(REPO / extra)[:6]
    for preset in ("hifigan-22k", "espnet-22k"):
        cfg, spreads = load_config(preset), []
        for u in utts:
            y = load(u.path, cfg.sample_rate)
            for gain in (1.0, 0.05):                   # as recorded and 26 dB quieter
                with torch.inference_mode():
                    m = mel_spectrogram(torch.from_numpy(y * gain)[None], cfg)[0].numpy()
                spreads.append(np.percentile(m, 99) - np.percentile(m, 5))
        print(f"{preset} ({cfg.log}): {len(spreads)} mels, spread {min(spreads):.2f}-{max(spreads):.2f}")


if __name__ == "__main__":
    main()
