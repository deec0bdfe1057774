"""Initial phase estimates for iterative phase retrieval.

``pghi``: phase-gradient integration (Průša, Balazs & Søndergaard 2017) restricted to the time
direction, which vectorises: the phase advance of bin ``k`` over one hop is the bin's centre
frequency plus a correction from the frequency derivative of the log-magnitude,
``dphi_t = 2 pi a k / M + gamma/(a M) * d/dk log|S|`` (gamma = 0.25645 L^2 for a Hann window of
length L, a = hop, M = n_fft), integrated by a cumulative sum over frames (trapezoid rule).
Bins below ``tol`` (relative to the maximum, in dB) get zero phase advance. Shapes:
magnitude ``[B, T, F]`` -> unit-modulus complex ``[B, T, F]``.
"""
from __future__ import annotations

import math

import torch

from pipeline.config import AudioConfig

HANN_GAMMA = 0.25645


def pghi_time(mag: torch.Tensor, cfg: AudioConfig, tol_db: float = 50.0) -> torch.Tensor:
    a, M, L = cfg.hop_length, cfg.n_fft, cfg.win_length
    gamma = HANN_GAMMA * L * L
    logm = mag.clamp_min(1e-10).log()
    dk = torch.zeros_like(logm)
    dk[..., 1:-1] = (logm[..., 2:] - logm[..., :-2]) / 2          # d/dk log|S|, centred
    k = torch.arange(mag.shape[-1], device=mag.device, dtype=mag.dtype)
    dphi = 2 * math.pi * a * k / M + (gamma / (a * M)) * dk
    floor = mag.amax(dim=(-2, -1), keepdim=True) * 10 ** (-tol_db / 20)
    dphi = torch.where(mag > floor, dphi, torch.zeros_like(dphi))
    step = torch.zeros_like(dphi)
    step[:, 1:] = (dphi[:, 1:] + dphi[:, :-1]) / 2
    phi = torch.cumsum(step, dim=1)
    return torch.polar(torch.ones_like(mag), torch.remainder(phi, 2 * math.pi))
