"""What a DeGLI block costs next to an FGLA iteration on CPU, and why a cheaper net does not
close the gap: one batch of 8 x 256 frames (n_fft 1024), 1 torch thread, best of 5.

Times one FGLA iteration (STFT + ISTFT + projections), the residual net of ``DeGLINet``
(8 channels, the size trained here) with its features, the same body in channels-last
layout, and two lighter designs never trained, only timed: a separable gated net (1x1 ->
depthwise 3x5 -> 1x1, 8 channels, ~10x fewer multiply-adds) and the same with 2 channels.
Every hidden layer of width c reads and writes c real maps of the spectrogram's size, so
even a net with few multiply-adds moves several times the data of a whole FGLA iteration.

    .venv/bin/python benchmarks/checks/degli_cost.py [--threads 1]
"""
from __future__ import annotations

import argparse
import json

import torch
from _timing import best_of
from torch import nn

from pipeline.algorithms.gla import iterate
from pipeline.config import load_config
from pipeline.dsp.stft import FramePair
from pipeline.models.degli import DeGLIConfig, DeGLINet


class Separable(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.a = nn.Conv2d(7, 2 * c, 1)
        self.d = nn.Conv2d(c, 2 * c, (3, 5), padding=(1, 2), groups=c)
        self.o = nn.Conv2d(c, 2, 1)

    def forward(self, f):
        a, b = self.a(f).chunk(2, 1)
        h = a * torch.sigmoid(b)
        a, b = self.d(h).chunk(2, 1)
        return self.o(a * torch.sigmoid(b))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = load_config("mel80-16k")
    B, T, F = 8, 256, cfg.n_freq
    g = torch.Generator().manual_seed(0)
    mag = torch.rand(B, T, F, generator=g)
    x = mag.to(torch.complex64)
    pair = FramePair(cfg, T, torch.full((B,), T * cfg.hop_length), "cpu", torch.float32)
    feats = torch.randn(B, 7, T, F, generator=g)
    net = DeGLINet(cfg, DeGLIConfig(channels=8)).eval()
    out = {}
    with torch.inference_mode():
        out["fgla_iteration_ms"] = best_of(lambda: iterate(x, mag, pair, 10)) / 10 * 1e3
        out["degli_net_8ch_with_features_ms"] = best_of(lambda: net(x, x, x, mag)) * 1e3
        out["degli_net_8ch_body_ms"] = best_of(lambda: net.out(net.body(feats))) * 1e3
        cl = feats.contiguous(memory_format=torch.channels_last)
        out["degli_net_8ch_body_channels_last_ms"] = best_of(lambda: net.out(net.body(cl))) * 1e3
        for c in (8, 2):
            s = Separable(c).eval()
            out[f"separable_{c}ch_ms"] = best_of(lambda: s(feats)) * 1e3
    it = out["fgla_iteration_ms"]
    out = {k: round(v, 1) for k, v in out.items()}
    out.update({f"{k[:-3]}_in_fgla_iterations": round(v / it, 1) for k, v in list(out.items())
                if k != "fgla_iteration_ms"})
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
