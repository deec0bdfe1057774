"""Filterbanks, log compression and the STFT: one place for window, padding and frame layout.

Shapes: waveforms ``[B, N]``, spectrograms ``[B, F, T]`` (F = n_fft//2+1), mels ``[B, M, T]``.
"""
from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from pipeline.config import AudioConfig


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pipeline"


@functools.lru_cache(maxsize=32)
def _filterbank_np(cfg: AudioConfig) -> np.ndarray:
    """librosa's filterbank, kept on disk after the first use (``~/.cache/pipeline``, keyed by
    the mel fields and librosa's version): importing librosa costs a process ~1.1 s, a tenth
    of a whole `pipeline phase` over ten minutes of audio. Unwritable cache: computed each time."""
    from importlib.metadata import version

    key = (cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax, cfg.mel_scale, cfg.norm,
           version("librosa"))
    path = _cache_dir() / f"melfb-{hashlib.sha1(repr(key).encode()).hexdigest()[:16]}.npy"
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        pass
    import librosa

    fb = librosa.filters.mel(
        sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax,
        htk=cfg.mel_scale == "htk", norm="slaney" if cfg.norm == "slaney" else None,
        dtype=np.float32,
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy")
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, fb)
        os.replace(tmp, path)
    except OSError:
        pass
    return fb


def filterbank(cfg: AudioConfig, device: torch.device | str = "cpu") -> torch.Tensor:
    """librosa's mel filterbank for ``cfg`` as a ``[M, F]`` float32 tensor."""
    return torch.from_numpy(_filterbank_np(cfg)).to(device)


@functools.lru_cache(maxsize=32)
def _pinv_np(cfg: AudioConfig) -> np.ndarray:
    return np.linalg.pinv(_filterbank_np(cfg)).astype(np.float32)


def filterbank_pinv(cfg: AudioConfig, device: torch.device | str = "cpu") -> torch.Tensor:
    """Moore-Penrose pseudo-inverse of the filterbank, ``[F, M]``."""
    return torch.from_numpy(_pinv_np(cfg)).to(device)


@functools.lru_cache(maxsize=32)
def _bound_np(cfg: AudioConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    A = _filterbank_np(cfg).astype(np.float64)                 # [M, F]
    k = max(1, int((A > 0).sum(0).max()))
    idx = np.argsort(-A, axis=0)[:k].T                          # [F, k] bands by weight
    w = np.take_along_axis(A.T, idx, axis=1)                    # [F, k]
    neg_log_w = np.where(w > 0, -np.log(np.where(w > 0, w, 1.0)), np.inf)
    seen = np.flatnonzero(w[:, 0] > 0)
    # each bin's nearest bin that some band sees (itself when seen)
    near = seen[np.abs(np.arange(A.shape[1])[:, None] - seen[None, :]).argmin(1)]
    return idx.astype(np.int64), neg_log_w.astype(np.float32), near.astype(np.int64)


DC_MARGIN = 1.5   # nepers


def log_magnitude_bound(mel: torch.Tensor, cfg: AudioConfig) -> torch.Tensor:
    """Per bin, the largest ln-magnitude the mel allows: ``[B, T, M]`` -> ``[B, T, F]``.

    Every term of ``mel_b = sum_f A[b, f] |X_f|^p`` is non-negative, so
    ``|X_f| <= (mel_b / A[b, f])^(1/p)`` for every band ``b`` that sees bin ``f``; the bound is
    the smallest of these. Exact for mels computed from audio (the clamp floor only loosens
    it). Bins no band sees (DC and Nyquist when fmin = 0 and fmax = sr/2, everything above
    fmax) get the bound of the nearest bin a band sees, and DC the frame's largest bound plus
    ``DC_MARGIN`` nepers (a DC offset in a quiet frame exceeds the largest bound by up to 0.92
    in the test corpus). The mel says nothing about these bins, so this is a cap, not a
    bound, but unbounded they let a model emit anything (measured: 4e5 at the Nyquist bin of
    a loud validation file, where the truth was 2e-4)."""
    idx, nlw, near = _bound_np(cfg)
    logmel = decompress(mel, cfg).clamp_min(1e-30).log()        # [B, T, M]
    # Frames as columns, so that picking bands and bins copies whole rows (a gather along the
    # last axis, [B, T, F, k] at once, was 10 % of the inverter's time); same values.
    rows = logmel.reshape(-1, logmel.shape[-1]).T.contiguous()   # [M, N]
    idx_t = torch.from_numpy(idx).to(mel.device)
    nlw_t = torch.from_numpy(nlw).to(mel.device)
    bound = rows.index_select(0, idx_t[:, 0]) + nlw_t[:, :1]     # [F, N]
    for j in range(1, idx.shape[1]):
        bound = torch.minimum(bound, rows.index_select(0, idx_t[:, j]) + nlw_t[:, j:j + 1])
    bound = bound / cfg.power
    if np.isinf(nlw[:, 0]).any():
        bound = bound.index_select(0, torch.from_numpy(near).to(mel.device))
        if near[0] != 0:   # DC unseen: an offset owes nothing to the audible spectrum (above)
            bound = torch.cat([bound.amax(0, keepdim=True) + DC_MARGIN, bound[1:]], 0)
    return bound.T.reshape(*logmel.shape[:-1], -1)


def window(cfg: AudioConfig, device: torch.device | str = "cpu",
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Periodic Hann window of ``win_length`` (torch.stft centres it inside n_fft)."""
    return torch.hann_window(cfg.win_length, periodic=True, device=device, dtype=dtype)


def edge_pad(cfg: AudioConfig) -> int:
    """Samples of padding on each side before framing."""
    return cfg.n_fft // 2 if cfg.center else (cfg.n_fft - cfg.hop_length) // 2


def stft(y: torch.Tensor, cfg: AudioConfig, win: torch.Tensor | None = None,
         padded: bool = False) -> torch.Tensor:
    """Complex STFT ``[B, F, T]`` of waveforms ``[B, N]`` with the config's framing.

    ``padded=True``: ``y`` already carries its edge padding (see :func:`ragged_batch`).
    """
    if win is None:
        win = window(cfg, y.device, y.dtype)
    if not padded:
        pad = edge_pad(cfg)
        y = torch.nn.functional.pad(y.unsqueeze(1), (pad, pad), mode=cfg.pad_mode).squeeze(1)
    return torch.stft(y, cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
                      window=win, center=False, return_complex=True)


def magnitude(y: torch.Tensor, cfg: AudioConfig) -> torch.Tensor:
    """Linear STFT magnitude ``[B, F, T]``."""
    return stft(y, cfg).abs()


def compress(x: torch.Tensor, cfg: AudioConfig) -> torch.Tensor:
    """Linear mel (magnitude or power per ``cfg.power``) -> the config's log scale."""
    x = x.clamp_min(cfg.clamp)
    if cfg.log == "ln":
        return torch.log(x)
    if cfg.log == "log10":
        return torch.log10(x)
    if cfg.log == "db":
        return (10.0 if cfg.power == 2 else 20.0) * torch.log10(x)
    return x


def decompress(x: torch.Tensor, cfg: AudioConfig) -> torch.Tensor:
    """Inverse of :func:`compress` (values at the clamp floor stay at the floor)."""
    if cfg.log == "ln":
        return torch.exp(x)
    if cfg.log == "log10":
        return torch.pow(10.0, x)
    if cfg.log == "db":
        return torch.pow(10.0, x / (10.0 if cfg.power == 2 else 20.0))
    return x


def mel_from_magnitude(mag: torch.Tensor, cfg: AudioConfig) -> torch.Tensor:
    """Compressed mel ``[B, M, T]`` from linear magnitude ``[B, F, T]``."""
    spec = mag if cfg.power == 1 else mag.pow(cfg.power)
    return compress(torch.matmul(filterbank(cfg, mag.device), spec), cfg)


def mel_spectrogram(y: torch.Tensor, cfg: AudioConfig) -> torch.Tensor:
    """Compressed mel ``[B, M, T]`` of waveforms ``[B, N]``."""
    return mel_from_magnitude(magnitude(y, cfg), cfg)


def ragged_batch(waves: list[np.ndarray], cfg: AudioConfig) -> tuple[torch.Tensor, list[int]]:
    """Edge-pad each waveform on its own (so reflect padding sees only its own samples), then
    zero-pad to the longest: ``stft(batch, cfg, padded=True)[i, :, :n_frames[i]]`` equals the
    STFT of ``waves[i]`` alone."""
    pad = edge_pad(cfg)
    mode = "reflect" if cfg.pad_mode == "reflect" else "constant"
    padded = [np.pad(w, (pad, pad), mode=mode) for w in waves]  # type: ignore[call-overload]
    batch = torch.from_numpy(pad_batch(padded).astype(np.float32, copy=False))
    return batch, [cfg.n_frames(len(w)) for w in waves]


def pad_batch(arrays: list[np.ndarray], axis: int = -1, value: float = 0.0) -> np.ndarray:
    """Stack arrays of unequal length along a new first axis, padding ``axis`` with ``value``."""
    longest = max(a.shape[axis] for a in arrays)
    out = []
    for a in arrays:
        widths = [(0, 0)] * a.ndim
        widths[axis] = (0, longest - a.shape[axis])
        out.append(np.pad(a, widths, constant_values=value))
    return np.stack(out)


# Frames per STFT call for one long utterance: an hour in one call holds its padded signal,
# every frame and the complex spectrogram at once (1.6 GB for 30 minutes at 16 kHz);
# chunks of this many frames (65 s at hop 256) keep it to a few tens of MB.
FEATURE_CHUNK_FRAMES = 4096


def utterance_features(waves: list[np.ndarray], cfg: AudioConfig, with_mag: bool = True
                       ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Ragged waveforms -> per utterance the true STFT magnitude ``[T_i, F]`` (with
    ``with_mag``, else an empty list) and the compressed mel ``[T_i, M]`` (float32): what
    ``extract`` stores. Utterances up to :data:`FEATURE_CHUNK_FRAMES` frames go in one batch;
    longer ones frame by frame-chunk (the same frames: chunk ``[a, b)`` is the STFT of its
    own span of the padded signal)."""
    n_frames = [cfg.n_frames(len(w)) for w in waves]
    mags: list[np.ndarray | None] = [None] * len(waves)
    mels: list[np.ndarray | None] = [None] * len(waves)
    short = [i for i, n in enumerate(n_frames) if n <= FEATURE_CHUNK_FRAMES]
    with torch.inference_mode():
        if short:
            batch, _ = ragged_batch([waves[i] for i in short], cfg)
            mag = stft(batch, cfg, padded=True).abs()            # [B, F, T]
            mel = mel_from_magnitude(mag, cfg)                    # [B, M, T]
            for j, i in enumerate(short):
                if with_mag:
                    mags[i] = np.ascontiguousarray(mag[j, :, :n_frames[i]].T.numpy())
                mels[i] = np.ascontiguousarray(mel[j, :, :n_frames[i]].T.numpy())
        for i in (i for i, n in enumerate(n_frames) if n > FEATURE_CHUNK_FRAMES):
            pad = edge_pad(cfg)                                   # one copy: [1, L]
            mode = "reflect" if cfg.pad_mode == "reflect" else "constant"
            padded = torch.from_numpy(np.pad(waves[i].astype(np.float32, copy=False), (pad, pad),
                                             mode=mode))[None]  # type: ignore[call-overload]
            parts_mag, parts_mel = [], []
            for a in range(0, n_frames[i], FEATURE_CHUNK_FRAMES):
                b = min(a + FEATURE_CHUNK_FRAMES, n_frames[i])
                seg = padded[:, a * cfg.hop_length:(b - 1) * cfg.hop_length + cfg.n_fft]
                m = stft(seg, cfg, padded=True).abs()             # [1, F, b - a]
                if with_mag:
                    parts_mag.append(m[0].T.numpy())
                parts_mel.append(mel_from_magnitude(m, cfg)[0].T.numpy())
            if with_mag:
                mags[i] = np.ascontiguousarray(np.concatenate(parts_mag))
            mels[i] = np.ascontiguousarray(np.concatenate(parts_mel))
    return (mags if with_mag else []), mels  # type: ignore[return-value]
