"""Distances between magnitude spectrograms (``[..., T, F]`` tensors, linear magnitude)."""
from __future__ import annotations

import torch


def spectral_convergence(*, reference: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
    """||ref - est||_F / ||ref||_F over the last two axes."""
    num = torch.linalg.vector_norm(reference - estimate, dim=(-2, -1))
    return num / torch.linalg.vector_norm(reference, dim=(-2, -1)).clamp_min(1e-12)


def log_spectral_distance(*, reference: torch.Tensor, estimate: torch.Tensor,
                          floor: float = 1e-5) -> torch.Tensor:
    """Mean over frames of the RMS (over bins) of 20*log10(ref/est) in dB, floored."""
    d = 20 * (torch.log10(reference.clamp_min(floor)) - torch.log10(estimate.clamp_min(floor)))
    return d.pow(2).mean(-1).sqrt().mean(-1)
