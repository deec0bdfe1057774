"""Mel -> magnitude for a list of utterances, in length buckets: the inversion methods."""
from __future__ import annotations

import numpy as np
import torch

from pipeline.algorithms.invert import METHODS as ALGORITHMS
from pipeline.config import AudioConfig
from pipeline.dsp.mel import compress
from pipeline.models.inverter import model_invert
from pipeline.parallel.batching import buckets, stack_frames

# The inversion methods: the algorithms (no weights) and the learned model.
METHODS = {**ALGORITHMS, "model": model_invert}


def mel_floor(cfg: AudioConfig) -> float:
    """The compressed value of silence: what padding frames are filled with."""
    return float(compress(torch.tensor(0.0), cfg))


def invert_frames(mels: list[np.ndarray], cfg: AudioConfig, method: str, *, model=None,
                  device: torch.device | str = "cpu", batch_frames: int = 1000,
                  n_iter: int = 50) -> list[np.ndarray]:
    """Per-utterance mels ``[T_i, M]`` -> magnitudes ``[T_i, F]``, in length buckets.
    ``model``: the loaded inverter for ``method="model"``; ``n_iter``: NNLS iterations."""
    fn = METHODS[method]
    options = {"model": {"model": model}, "nnls": {"n_iter": n_iter}}.get(method, {})
    out: list[np.ndarray | None] = [None] * len(mels)
    floor = mel_floor(cfg)
    for group in buckets([m.shape[0] for m in mels], batch_frames):
        batch = stack_frames([mels[i] for i in group], floor).to(device)
        mag = fn(batch, cfg, **options).float().cpu().numpy()
        for j, i in enumerate(group):
            out[i] = mag[j, :mels[i].shape[0]]
    return out  # type: ignore[return-value]
