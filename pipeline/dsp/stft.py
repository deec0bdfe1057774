"""A fixed-shape STFT / ISTFT pair for iterative phase retrieval.

``torch.stft``/``torch.istft`` rebuild the window and the overlap-add envelope at every call;
Griffin-Lim calls them hundreds of times on the same shape. :class:`FramePair` builds both once
and works in the ``[B, T, F]`` layout (rfft over the last axis, no transposes in the loop).
Frame ``t`` covers padded samples ``[t*hop, t*hop + n_fft)``, the framing of
:func:`pipeline.dsp.mel.stft` on a signal padded by :func:`pipeline.dsp.mel.edge_pad`.
"""
from __future__ import annotations

import copy

import torch

from pipeline.config import AudioConfig
from pipeline.dsp.mel import edge_pad, window


class FramePair:
    """STFT/ISTFT for a batch of ``n_frames`` frames; ``lengths`` are the true signal lengths.

    After each ISTFT the samples outside each signal (edge padding, batch padding) are zeroed:
    the projection onto spectrograms of signals of the given lengths.
    """

    def __init__(self, cfg: AudioConfig, n_frames: int, lengths: torch.Tensor,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.cfg = cfg
        self.n_fft, self.hop, self.T = cfg.n_fft, cfg.hop_length, n_frames
        self.length = self.n_fft + self.hop * (n_frames - 1)
        win = torch.zeros(self.n_fft, device=device, dtype=dtype)
        off = (self.n_fft - cfg.win_length) // 2
        win[off:off + cfg.win_length] = window(cfg, device, dtype)
        self.win = win
        self.pad = edge_pad(cfg)
        self.ratio = self.n_fft // self.hop if self.n_fft % self.hop == 0 else 0
        lengths = lengths.to(device)
        # Each item's own frames: t < n_frames(length). The least-squares ISTFT divides by the
        # overlap-added squared window of those frames only, so batch padding changes nothing.
        own = torch.tensor([cfg.n_frames(int(n)) for n in lengths], device=device)
        frame_mask = (torch.arange(n_frames, device=device)[None, :] < own[:, None]).to(dtype)
        self.frame_mask = frame_mask[:, :, None]                              # [B, T, 1]
        env = self._overlap_add(self.frame_mask * win.pow(2))                 # [B, L]
        inv = torch.where(env > 1e-10, 1.0 / env.clamp_min(1e-10), torch.zeros_like(env))
        pos = torch.arange(self.length, device=device)
        inside = (pos[None, :] >= self.pad) & (pos[None, :] < self.pad + lengths[:, None])
        self.scale = inv * inside.to(dtype)                                    # [B, L]

    def _overlap_add(self, frames: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, T, n_fft]`` -> ``[B, L]`` summing frames at hop spacing, into ``out`` if given."""
        B, T, N = frames.shape
        if self.ratio:
            r, hop = self.ratio, self.hop
            parts = frames.reshape(B, T, r, hop)
            ola = (frames.new_empty(B, T + r - 1, hop) if out is None
                   else out.view(B, T + r - 1, hop))
            # r = n_fft/hop slice-adds over the whole batch (4 for 75% overlap); the first
            # one a copy (the sums, and so the results, are those of adding into zeros)
            ola[:, :T].copy_(parts[:, :, 0])
            ola[:, T:].zero_()
            for k in range(1, r):
                ola[:, k:k + T] += parts[:, :, k]
            return ola.reshape(B, -1)
        y = torch.nn.functional.fold(
            frames.transpose(1, 2), output_size=(1, self.length), kernel_size=(1, N),
            stride=(1, self.hop)).reshape(B, -1)
        return y if out is None else out.copy_(y)

    def stft(self, x: torch.Tensor, *, frames: torch.Tensor | None = None) -> torch.Tensor:
        """Padded signals ``[B, L]`` -> complex ``[B, T, F]``; ``frames`` (real
        ``[B, T, n_fft]``) is a work buffer for the windowed frames. (The FFTs' own ``out=``
        is not used: torch computes into a temporary and copies, measured slower.)"""
        frames = torch.mul(x.unfold(-1, self.n_fft, self.hop), self.win, out=frames)
        return torch.fft.rfft(frames, dim=-1)

    def istft(self, spec: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
        """Complex ``[B, T, F]`` -> padded signals ``[B, L]`` (least-squares ISTFT, masked),
        written into ``out`` when given.

        Frames past an item's own are not masked here (GLA's amplitude projection zeroes them
        already); an unprojected spectrogram goes through :meth:`own_frames` first."""
        frames = torch.fft.irfft(spec, n=self.n_fft, dim=-1)
        return self._overlap_add(frames.mul_(self.win), out).mul_(self.scale)

    def own_frames(self, spec: torch.Tensor) -> torch.Tensor:
        """Zero each item's frames past its own end (the batch padding)."""
        return spec * self.frame_mask

    def select(self, rows: torch.Tensor) -> "FramePair":
        """The pair of the items ``rows`` of the batch (same frames, window and padding)."""
        sub = copy.copy(self)
        sub.frame_mask, sub.scale = self.frame_mask[rows], self.scale[rows]
        return sub

    def crop(self, x: torch.Tensor, lengths: list[int]) -> list[torch.Tensor]:
        return [x[i, self.pad:self.pad + n] for i, n in enumerate(lengths)]
