"""Distances between magnitude spectrograms (``[..., T, F]`` tensors, linear magnitude)."""
from __future__ import annotations

import torch


def spectral_convergence(*, reference: torch.Tensor, estimate: torch.Tensor,
                         dim: tuple[int, ...] | None = (-2, -1), eps: float = 1e-12) -> torch.Tensor:
    """``||ref - est||_F / ||ref||_F`` over ``dim`` (default: the last two axes, one value per
    item; ``None``: over everything, one value for a batch, which a silent item cannot blow
    up). The denominator is clamped at ``eps``."""
    num = torch.linalg.vector_norm(reference - estimate, dim=dim)
    return num / torch.linalg.vector_norm(reference, dim=dim).clamp_min(eps)


def log_spectral_distance(*, reference: torch.Tensor, estimate: torch.Tensor,
                          floor: float = 1e-5) -> torch.Tensor:
    """Mean over frames of the RMS (over bins) of 20*log10(ref/est) in dB, floored."""
    d = 20 * (torch.log10(reference.clamp_min(floor)) - torch.log10(estimate.clamp_min(floor)))
    return d.pow(2).mean(-1).sqrt().mean(-1)
