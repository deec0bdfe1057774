"""Issue 18 experiment (fifteenth session): the asymmetric loss made symmetric where the
oracle found the loss, the loud low band of frames without a clear pitch.

`under_over_oracle.py --levels` put the largest share of the inverter's remaining loss in the
bins below 1.25 kHz (0-79) that are loud in the truth (>= 0.1) in frames whose comb salience is
in the lower half (no clear pitch): there the net, unsure, settles low, as the asymmetric loss
(over-estimates weigh K = 6 times) asks of it everywhere. This runs `pipeline train invert`
with the training loss's ``over`` set per bin: 1 (a plain L1: the median) on those bins, K
elsewhere; everything else as the command given. Frames are judged on the crop's true
magnitude, the salience median over the crop's frames. The validation loss the trainer
reports is the same per-bin loss.

    .venv/bin/python benchmarks/checks/aperiodic_weight.py train invert --train ... (as
        `pipeline train invert`, with --over-weight K and --keep-epochs)
"""
from __future__ import annotations

import sys

import torch
from f0_from_mel import F0S, combs

import pipeline.train.invert as ti
from pipeline.cli import main as cli_main

_plain = ti.log_l1
_combs: dict[tuple[int, torch.device], torch.Tensor] = {}


def over_map(mag: torch.Tensor, over: float, sample_rate: int = 16000,
             n_fft: int = 1024) -> torch.Tensor:
    """``[B, T, F]`` weights: 1 on loud low bins of frames without a clear pitch, else over."""
    lo, hi = 3, 80
    key = (mag.shape[-1], mag.device)
    if key not in _combs:
        _combs[key] = combs(sample_rate, n_fft, lo, hi, F0S).to(mag.device)
    lx = (mag[..., lo:hi] + 1e-2).log()
    sal = ((lx - lx.mean(-1, keepdim=True)) @ _combs[key].T).amax(-1)      # [B, T]
    aperiodic = sal <= sal.median(dim=1, keepdim=True).values
    low = torch.arange(mag.shape[-1], device=mag.device) < hi
    plain = aperiodic[..., None] & low & (mag >= 0.1)
    return torch.where(plain, torch.ones_like(mag), torch.full_like(mag, over))


def log_l1(pred: torch.Tensor, mag: torch.Tensor, floor: float = 1e-2,
           over: float = 1.0) -> torch.Tensor:
    if over == 1.0 or mag.dim() not in (2, 3) or mag.shape[-1] != 513:
        return _plain(pred, mag, floor, over)
    w = over_map(mag if mag.dim() == 3 else mag[None], over).reshape(mag.shape)
    e = (pred + floor).log() - (mag + floor).log()
    return torch.where(e > 0, w * e, -e) * (2 / (1 + w))


if __name__ == "__main__":
    ti.log_l1 = log_l1          # the trainer's loss (and its validation) look it up at call time
    sys.argv = ["pipeline", *sys.argv[1:]]
    cli_main()
