"""Long items reconstructed in overlapping chunks, so that memory stays flat in their length.

An hour-long recording as one batch needs several full-length complex spectrograms at once;
chunks of ``CHUNK_FRAMES`` frames overlap by ``CHUNK_OVERLAP`` frames on each side, each
chunk starts from the phase its predecessor found on the overlap (so neighbours agree there)
and the outputs are cross-faded across the overlap's middle half.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from pipeline.algorithms.gla import initial_phase
from pipeline.config import AudioConfig

LONG_FRAMES = 4096           # 65 s at 16 kHz / hop 256
CHUNK_FRAMES = 2048
CHUNK_OVERLAP = 32


def reconstruct_long(mag: np.ndarray, mel: np.ndarray | None, n_samples: int, cfg: AudioConfig,
                     run: Callable, init: str, gen: torch.Generator, device: torch.device,
                     chunk_frames: int) -> tuple[np.ndarray, int]:
    """One long item ``[T, F]`` in overlapping chunks (see :data:`CHUNK_FRAMES`); returns the
    waveform and the most iterations a chunk ran."""
    T, hop, O = mag.shape[0], cfg.hop_length, CHUNK_OVERLAP
    out = np.zeros(n_samples, np.float32)
    bounds = list(range(0, T, chunk_frames))[1:]           # chunk k's core: [b_k, b_{k+1})
    starts = [0] + [b - O for b in bounds]
    ends = [b + O for b in bounds] + [T]
    prev: torch.Tensor | None = None                        # previous chunk's STFT [1, T', F]
    fade = O // 2 * hop                                     # half-width of the cross-fade
    most = 0
    for k, (s, e) in enumerate(zip(starts, ends)):
        m = torch.from_numpy(np.ascontiguousarray(mag[s:e]))[None].to(device)
        length = min(n_samples - s * hop, cfg.n_samples(e - s))
        lengths = torch.tensor([length])
        start: str | torch.Tensor = init
        if prev is not None:
            ph = initial_phase(m, init, gen, cfg)
            ov = ends[k - 1] - s                            # frames shared with chunk k-1
            shared = prev[:, -ov:][:, :e - s]
            ph[:, :shared.shape[1]] = shared / shared.abs().clamp_min(1e-12)
            start = ph
        mm = None if mel is None else torch.from_numpy(
            np.ascontiguousarray(mel[s:e]))[None].to(device)
        x, pair, its = run(m, mm, lengths, gen, start)
        most = max(most, its[0])
        prev = pair.stft(x)
        y = pair.crop(x, [length])[0].float().cpu().numpy()
        # weights: 1 in the core, linear ramps centred on the chunk boundaries
        w = np.ones(length, np.float32)
        pos = np.arange(length) + s * hop                   # original sample of each y sample
        if k > 0:
            c = bounds[k - 1] * hop
            w *= np.clip((pos - (c - fade)) / (2 * fade), 0, 1)
        if k < len(bounds):
            c = bounds[k] * hop
            w *= np.clip(((c + fade) - pos) / (2 * fade), 0, 1)
        a = s * hop
        out[a:a + length] += w * y
    return out, most
