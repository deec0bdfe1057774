"""The inverter's low-band 2-D net: convolutions over (time, frequency) below ``hz``.

Below ~1 kHz the mel bands (37 Hz apart at 80 slaney mels, 16 kHz) are narrower than a voice's
harmonic spacing, so the mel says where the harmonics are; a 1-D net over time with bins as
channels must learn that decoding anew at every frequency, and the shipped one underfits it
(its low-band log error on training crops is about what it is on validation). Convolutions
over frequency decode a comb at any pitch with the same weights (issue 18).

Inputs, the bins below ``hz``: the inverter's log-magnitude and the log pseudo-inverse (the mel
bands spread over their bins, the finest detail the mel has), each divided by ``scale``.
Output: a residual on the log-magnitude, tapered linearly from 1 at 1 kHz to 0 at ``hz``, so
the bins above are untouched. The last conv is zero-initialised: an untrained net changes
nothing. Hidden layers: ``layers`` convs of ``time_kernel`` x 7 (frames x bins), dilated over
frequency by 1, 2, 1, 2, ...; ``separable``: each a depthwise conv then a 1x1 conv across
channels (~1/9 of the multiply-adds at 16 channels). ``down`` > 1: the hidden layers run at
1/``down`` of the bins (a strided conv in, a transposed conv out, added to the full-resolution
first layer's output, which has ``channels // down`` channels), seeing ``down`` times as far
over frequency: 32 channels at ``down`` 2 cost ~1.7x the shipped 16 channels (~3x at full
resolution; benchmarks/checks/lowband_shapes.py); tried, it lowered the loss but not PESQ
after FGLA (BENCHMARKS). Computed in ``channels_last`` layout: oneDNN's kernels for
few-channel 2-D convs are ~1.6-2x faster in it on CPU.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.errors import UsageError

KERNEL = 7       # bins (the inverter's; ``kernel`` for experiments)
DILATIONS = 2    # the hidden layers' dilations over frequency cycle 1..DILATIONS (``dilations``)
TAPER_FROM = 1000.0   # Hz: the residual is tapered from here to the net's upper edge
CHUNK_FRAMES = 2048   # frames per pass through the 2-D convs (see LowBand2D.forward)


def zero_output_conv(channels: int) -> nn.Conv2d:
    """A 3x3 conv to one channel, zero-initialised: a residual net that starts as identity."""
    last = nn.Conv2d(channels, 1, 3, padding=1)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)  # type: ignore[arg-type]
    return last


class LowBand2D(nn.Module):
    taper: torch.Tensor

    def __init__(self, sample_rate: int, n_fft: int, channels: int, layers: int = 4,
                 hz: float = 1250.0, separable: bool = False, time_kernel: int = 3,
                 kernel: int = KERNEL, dilations: int = DILATIONS, down: int = 1):
        super().__init__()
        if hz <= TAPER_FROM or hz >= sample_rate / 2:
            raise UsageError(f"the low-band net's upper edge ({hz:g} Hz) must lie between "
                             f"{TAPER_FROM:g} Hz and the Nyquist frequency ({sample_rate / 2:g} Hz)")
        if (channels < 1 or layers < 0 or time_kernel < 1 or time_kernel % 2 == 0
                or kernel < 1 or kernel % 2 == 0 or dilations < 1 or down < 1
                or (down > 1 and down % 2) or channels < down):
            raise UsageError(f"the low-band net needs >= 1 channel (got {channels}), >= 0 "
                             f"hidden layers (got {layers}), an odd time kernel (got "
                             f"{time_kernel}), an odd frequency kernel (got {kernel}), "
                             f"dilations >= 1 (got {dilations}) and a downsampling factor of 1 or "
                             f"an even number <= its channels (got {down}), so that its output "
                             "keeps the input's frames and bins")
        self.bins = math.ceil(hz * n_fft / sample_rate)
        f = torch.arange(self.bins) * sample_rate / n_fft
        self.register_buffer("taper", ((hz - f) / (hz - TAPER_FROM)).clamp(0, 1), persistent=False)
        c, kt = channels, time_kernel
        k = kernel
        self.down = down
        c0 = c // down   # the full-resolution layers' channels
        first: list[nn.Module] = [nn.Conv2d(2, c0, (3, k), padding=(1, k // 2)), nn.GELU()]
        convs: list[nn.Module] = first if down == 1 else []
        for i in range(layers):
            d = 1 + i % dilations
            pad = (kt // 2, d * (k // 2))
            if separable:
                convs += [nn.Conv2d(c, c, (kt, k), padding=pad, dilation=(1, d), groups=c),
                          nn.Conv2d(c, c, 1), nn.GELU()]
            else:
                convs += [nn.Conv2d(c, c, (kt, k), padding=pad, dilation=(1, d)), nn.GELU()]
        if down == 1:
            self.net = nn.Sequential(*convs, zero_output_conv(c))
        else:
            self.first = nn.Sequential(*first)
            self.hidden = nn.Sequential(
                nn.Conv2d(c0, c, (1, 2 * down), stride=(1, down), padding=(0, down // 2)),
                nn.GELU(), *convs,
                nn.ConvTranspose2d(c, c0, (1, 2 * down), stride=(1, down), padding=(0, down // 2)))
            self.last = nn.Sequential(nn.GELU(), zero_output_conv(c0))
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 2, T, bins]`` (channels_last) -> the residual ``[B, T, bins]``."""
        if self.down == 1:
            return self.net(x)[:, 0]
        h = self.first(x)
        nb, d = h.shape[-1], self.down
        pad = -nb % d   # the bins, padded to a multiple of ``down`` (edge copied), then cut
        up = self.hidden(nn.functional.pad(h, (0, pad, 0, 0), mode="replicate") if pad else h)
        return self.last(h + up[..., :nb])[:, 0]

    def forward(self, logmag: torch.Tensor, logpinv: torch.Tensor, scale: float) -> torch.Tensor:
        """``logmag``, ``logpinv`` ``[B, T, F]`` -> ``logmag`` with the low bins refined.

        The utterances go through the 2-D convs a few at a time (about ``CHUNK_FRAMES``
        frames): their activations then stay in cache (16 x 1000 frames in one pass ran at
        half the speed: 246x vs 451x real time, 2 threads); each utterance's result is the
        same either way."""
        nb = self.bins
        x = torch.stack([logmag[..., :nb], logpinv[..., :nb]], 1) / scale   # [B, 2, T, nb]
        per = max(1, CHUNK_FRAMES // max(1, x.shape[2]))
        res = torch.cat([self._body(c.contiguous(memory_format=torch.channels_last))
                         for c in x.split(per)])
        return torch.cat([logmag[..., :nb] + res * self.taper * scale, logmag[..., nb:]], -1)
