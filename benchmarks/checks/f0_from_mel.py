"""Issue 18 diagnostic: does the mel say the pitch, and does the inverter's output keep it?

A comb salience (log-magnitude of bins 3-79, 47-1234 Hz at mel80-16k, mean removed per frame,
against mean-removed Gaussian combs of every candidate F0 from 70 to 400 Hz, 1/96 octave apart)
picks each frame's F0 from the true magnitude, the pseudo-inverse and the inverter's output.
Over voiced frames (loud half by low-band energy, true salience in its top half), the share
where the estimate lies within 4 % (2/3 semitone) of the true magnitude's F0, and the share
at its octave (x2 or /2). If the pseudo-inverse finds the pitch where the net's output has lost
it, a comb at that pitch is information the net is not using.

    .venv/bin/python benchmarks/checks/f0_from_mel.py [--store data/val-mel80-16k.zarr]
        [--weights weights/invert-mel80-16k.pt] [--n 40]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from pipeline.algorithms.invert import pinv
from pipeline.io.store import Store
from pipeline.models.inverter import load_invert_model
from pipeline.train.invert import load_frames

F0S = 70.0 * 2 ** (torch.arange(0, 96 * np.log2(400 / 70)) / 96)   # 70-400 Hz, 1/96 octave


def combs(sample_rate: int, n_fft: int, lo: int, hi: int, f0s: torch.Tensor) -> torch.Tensor:
    """``[C, hi - lo]``: unit-norm, zero-mean Gaussian combs (sd 1 bin) at each F0's harmonics."""
    bins = torch.arange(lo, hi, dtype=torch.float64)
    hz = sample_rate / n_fft
    k = torch.arange(1, int(hi * hz / f0s.min()) + 2, dtype=torch.float64)
    centre = f0s[:, None].double() * k[None, :] / hz                      # [C, K] in bins
    c = torch.exp(-0.5 * (bins[None, None, :] - centre[..., None]) ** 2).sum(1)
    c = c - c.mean(1, keepdim=True)
    return (c / c.norm(dim=1, keepdim=True)).float()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default="data/val-mel80-16k.zarr")
    ap.add_argument("--weights", default="weights/invert-mel80-16k.pt")
    ap.add_argument("--n", type=int, default=40, help="random utterances")
    a = ap.parse_args()
    torch.set_num_threads(1)
    st = Store(a.store)
    cfg = st.config
    mel, mag, spans, _ = load_frames(st, 1)
    pick = np.random.default_rng(0).choice(len(spans), min(a.n, len(spans)), replace=False)
    idx = np.concatenate([np.arange(spans[i][0], spans[i][0] + spans[i][1]) for i in pick])
    m, g = torch.from_numpy(mel[idx])[None], torch.from_numpy(mag[idx])
    net = load_invert_model(a.weights, cfg).eval()
    with torch.inference_mode():
        est = {"pseudo-inverse": pinv(m, cfg)[0], "inverter": net.magnitude(m)[0]}
    lo, hi = 3, int(1250 * cfg.n_fft / cfg.sample_rate)
    comb = combs(cfg.sample_rate, cfg.n_fft, lo, hi, F0S)

    def salience(x: torch.Tensor) -> torch.Tensor:
        lx = (x[:, lo:hi] + 1e-2).log()
        return (lx - lx.mean(1, keepdim=True)) @ comb.T                   # [T, C]

    s_true = salience(g)
    f_true = F0S[s_true.argmax(1)]
    low = g[:, lo:hi].sum(1)
    loud = low > low.median()
    peak = s_true.max(1).values
    voiced = loud & (peak > peak[loud].median())
    print(f"{a.store}: {len(pick)} utterances, {int(voiced.sum())} voiced frames of {len(idx)}; "
          f"true F0 median {float(f_true[voiced].median()):.0f} Hz")
    for name, x in est.items():
        f = F0S[salience(x).argmax(1)]
        r = (f / f_true)[voiced]
        right = float(((r - 1).abs() < 0.04).float().mean())
        cents = (1200 * r.log2()).abs()
        fine = float((cents < 25).float().mean())
        octave = float((((r - 2).abs() < 0.08) | ((r - 0.5).abs() < 0.02)).float().mean())
        print(f"  {name}: F0 within 4 % {right:.3f}, within 25 cents {fine:.3f} (median "
              f"{float(cents.median()):.0f} cents off), an octave off {octave:.3f}")


if __name__ == "__main__":
    main()
