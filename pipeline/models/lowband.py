"""The inverter's low-band 2-D net: convolutions over (time, frequency) below ``hz``.

Below ~1 kHz the mel bands (37 Hz apart at 80 slaney mels, 16 kHz) are narrower than a voice's
harmonic spacing, so the mel says where the harmonics are; a 1-D net over time with bins as
channels must learn that decoding anew at every frequency, and the shipped one underfits it
(its low-band log error on training crops is about what it is on validation). Convolutions
over frequency decode a comb at any pitch with the same weights.

Inputs, the bins below ``hz``: the inverter's log-magnitude and the log pseudo-inverse (the mel
bands spread over their bins, the finest detail the mel has), each divided by ``scale``.
Output: a residual on the log-magnitude, tapered linearly from 1 at 1 kHz to 0 at ``hz``, so
the bins above are untouched. The last conv is zero-initialised: an untrained net changes
nothing. Hidden layers: ``layers`` convs of ``time_kernel`` x 7 (frames x bins), dilated over
frequency by 1, 2, 1, 2, ... Computed in ``channels_last`` layout: oneDNN's kernels for
few-channel 2-D convs are faster in it on CPU.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.errors import UsageError

KERNEL = 7       # bins
DILATIONS = 2    # the hidden layers' dilations over frequency cycle 1..DILATIONS
TAPER_FROM = 1000.0   # Hz: the residual is tapered from here to the net's upper edge
CHUNK_FRAMES = 2048   # frames per pass through the 2-D convs (see LowBand2D.forward)


class LowBand2D(nn.Module):
    taper: torch.Tensor

    def __init__(self, sample_rate: int, n_fft: int, channels: int, layers: int = 4,
                 hz: float = 1250.0, time_kernel: int = 3):
        super().__init__()
        if hz <= TAPER_FROM or hz >= sample_rate / 2:
            raise UsageError(f"the low-band net's upper edge ({hz:g} Hz) must lie between "
                             f"{TAPER_FROM:g} Hz and the Nyquist frequency ({sample_rate / 2:g} Hz)")
        if channels < 1 or layers < 0 or time_kernel < 1 or time_kernel % 2 == 0:
            raise UsageError(f"the low-band net needs >= 1 channel (got {channels}), >= 0 "
                             f"hidden layers (got {layers}) and an odd time kernel (got "
                             f"{time_kernel}), so that its output keeps the input's frames")
        self.bins = math.ceil(hz * n_fft / sample_rate)
        f = torch.arange(self.bins) * sample_rate / n_fft
        self.register_buffer("taper", ((hz - f) / (hz - TAPER_FROM)).clamp(0, 1), persistent=False)
        c, kt, k = channels, time_kernel, KERNEL
        convs: list[nn.Module] = [nn.Conv2d(2, c, (3, k), padding=(1, k // 2)), nn.GELU()]
        for i in range(layers):
            d = 1 + i % DILATIONS
            convs += [nn.Conv2d(c, c, (kt, k), padding=(kt // 2, d * (k // 2)), dilation=(1, d)),
                      nn.GELU()]
        last = nn.Conv2d(c, 1, 3, padding=1)     # zero-initialised: starts as the identity
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)  # type: ignore[arg-type]
        self.net = nn.Sequential(*convs, last)
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward(self, logmag: torch.Tensor, logpinv: torch.Tensor, scale: float) -> torch.Tensor:
        """``logmag``, ``logpinv`` ``[B, T, F]`` -> ``logmag`` with the low bins refined.

        The utterances go through the 2-D convs a few at a time (about ``CHUNK_FRAMES``
        frames), so that their activations stay in cache; each utterance's result is the same
        either way."""
        nb = self.bins
        x = torch.stack([logmag[..., :nb], logpinv[..., :nb]], 1) / scale   # [B, 2, T, nb]
        per = max(1, CHUNK_FRAMES // max(1, x.shape[2]))
        res = torch.cat([self.net(c.contiguous(memory_format=torch.channels_last))[:, 0]
                         for c in x.split(per)])
        return torch.cat([logmag[..., :nb] + res * self.taper * scale, logmag[..., nb:]], -1)
