"""What shapes of the inverter's low-band 2-D net cost (issue 18, twelfth session): each
untrained net alone over 16 x 1000 frames of its input (2 channels x the 80 bins below 1.25 kHz
of mel80-16k), the utterances ~2048 frames a pass as ``LowBand2D.forward`` takes them, best of
4 passes; then, for trained weights given, the whole forward pass and the 1-D net alone on
4 x 1000 frames.

    .venv/bin/python benchmarks/checks/lowband_shapes.py [--threads 2] [WEIGHTS ...]

Measured (2 threads, quiet; BENCHMARKS, twelfth session): 16 channels 190 ms, 32 channels
561 ms, 24 channels 428 ms, 32 with 2 hidden layers 337 ms, 32 at half the bins (``down`` 2)
321 ms, the same with 6 hidden layers 430 ms.
"""
from __future__ import annotations

import argparse

import torch
from _timing import best_of

from pipeline.config import load_config
from pipeline.models.inverter import load_invert_model
from pipeline.models.lowband import LowBand2D

SHAPES = {   # name: LowBand2D keyword arguments (time kernel 1, as shipped)
    "16 channels (shipped)": dict(channels=16),
    "32 channels": dict(channels=32),
    "24 channels": dict(channels=24),
    "32 channels, 2 hidden layers": dict(channels=32, layers=2),
    "32 channels at half the bins": dict(channels=32, down=2),
    "32 channels at half the bins, 6 layers": dict(channels=32, down=2, layers=6),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("weights", nargs="*")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = load_config("mel80-16k")
    x = torch.randn(16, 1000, cfg.n_freq)
    for name, kw in SHAPES.items():
        net = LowBand2D(cfg.sample_rate, cfg.n_fft, time_kernel=1, **kw).eval()
        with torch.inference_mode():
            best = best_of(lambda: net(x, x, 1.0), 4)   # noqa: B023
        n = sum(p.numel() for p in net.parameters())
        print(f"{name}: {best * 1000:.0f} ms per 16 x 1000 frames ({n} parameters)")
    mel = torch.randn(4, 1000, cfg.n_mels) - 4
    for w in a.weights:
        m = load_invert_model(w, cfg)
        with torch.inference_mode():
            whole = best_of(lambda: m(mel), 3)   # noqa: B023
            low, m.low = m.low, None
            one_d = best_of(lambda: m(mel), 3)   # noqa: B023
            m.low = low
        print(f"{w}: 4 x 1000 frames: {whole * 1000:.0f} ms, the 1-D net alone "
              f"{one_d * 1000:.0f} ms, the 2-D net {(whole - one_d) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
