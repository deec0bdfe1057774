"""Mel -> linear magnitude as batched torch functions, and the registry of methods.

Shapes: compressed mels ``[B, T, M]`` (the store's frame-major layout) -> magnitudes
``[B, T, F]``. Padding frames (beyond an utterance's length) are computed and later cropped.
"""
from __future__ import annotations

from typing import Callable

import torch

from pipeline.config import AudioConfig
from pipeline.dsp.mel import decompress, filterbank, filterbank_pinv

METHODS: dict[str, Callable] = {}


def register(name: str):
    def deco(fn):
        METHODS[name] = fn
        return fn
    return deco


def _power_root(x: torch.Tensor, cfg: AudioConfig) -> torch.Tensor:
    return x if cfg.power == 1 else x.sqrt()


@register("pinv")
@torch.inference_mode()
def pinv(mel: torch.Tensor, cfg: AudioConfig) -> torch.Tensor:
    """Pseudo-inverse of the filterbank applied to the linear mel, clipped at 0."""
    lin = decompress(mel, cfg)
    spec = torch.matmul(lin, filterbank_pinv(cfg, mel.device).T).clamp_min_(0.0)
    return _power_root(spec, cfg)


def log_pinv(mel: torch.Tensor, cfg: AudioConfig, floor: float = 1e-5) -> torch.Tensor:
    """ln of the pseudo-inverse magnitude estimate (the learned model's starting point)."""
    lin = decompress(mel, cfg)
    spec = torch.matmul(lin, filterbank_pinv(cfg, mel.device).T).clamp_min(floor)
    return spec.log() / cfg.power


@register("nnls")
@torch.inference_mode()
def nnls(mel: torch.Tensor, cfg: AudioConfig, n_iter: int = 50) -> torch.Tensor:
    """Non-negative least squares ``min_x ||A x - m||^2, x >= 0`` for every frame at once.

    FISTA (accelerated projected gradient) from the clipped pseudo-inverse, the start librosa's
    ``mel_to_stft`` uses. The gradient goes through A (rank <= n_mels) instead of the
    ``F x F`` Gram matrix: ``((x A^T) - m) A``.
    """
    A = filterbank(cfg, mel.device)                          # [M, F]
    target = decompress(mel, cfg)                            # [B, T, M], linear (power) mel
    lipschitz = torch.linalg.matrix_norm(A, ord=2) ** 2
    step = 1.0 / lipschitz
    x = torch.matmul(target, filterbank_pinv(cfg, mel.device).T).clamp_min_(0.0)
    y = x.clone()
    t = 1.0
    for _ in range(n_iter):
        grad = torch.matmul(torch.matmul(y, A.T) - target, A)
        x_new = (y - step * grad).clamp_min_(0.0)
        t_new = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
        y = x_new + ((t - 1.0) / t_new) * (x_new - x)
        x, t = x_new, t_new
    return _power_root(x, cfg)
