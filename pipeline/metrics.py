"""Objective speech metrics, each ``fn(*, reference, estimate, sample_rate) -> float``.

A metric that cannot be computed for an item raises :class:`MetricError` with the reason;
the scorer records NaN and that reason (never 0.0, never a running mean). Arguments are
keyword-only so that reference and estimate cannot be swapped by position.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

PESQ_RATE = 16000


class MetricError(ValueError):
    """This metric is undefined for this item (silence, too short, ...)."""


METRICS: dict[str, Callable[..., float]] = {}
INTRUSIVE: set[str] = set()          # metrics that need a reference


def register(name: str, intrusive: bool = True):
    def deco(fn):
        METRICS[name] = fn
        if intrusive:
            INTRUSIVE.add(name)
        return fn
    return deco


def _to_rate(y: np.ndarray, sr: int, target: int) -> np.ndarray:
    if sr == target:
        return y
    import librosa
    return librosa.resample(y, orig_sr=sr, target_sr=target, res_type="soxr_hq")


def _pesq(reference, estimate, sample_rate, mode):
    from pesq import NoUtterancesError, PesqError, pesq

    rate = PESQ_RATE if mode == "wb" or sample_rate >= PESQ_RATE else 8000
    ref, est = _to_rate(reference, sample_rate, rate), _to_rate(estimate, sample_rate, rate)
    if len(ref) < rate // 4:
        raise MetricError(f"too short for PESQ ({len(ref) / rate:.2f} s < 0.25 s)")
    for name, y in (("reference", ref), ("estimate", est)):
        if not np.any(y):   # pesq's C core raises "cannot convert float NaN" on all zeros
            raise MetricError(f"{name} is silent (all zeros): PESQ undefined")
    try:
        return float(pesq(rate, ref, est, mode))
    except NoUtterancesError:
        raise MetricError("PESQ found no utterances (silent or near-silent signal)") from None
    except PesqError as exc:
        raise MetricError(f"PESQ error: {type(exc).__name__}: {exc}") from None


@register("pesq_wb")
def pesq_wb(*, reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """ITU-T P.862.2 wideband PESQ (MOS-LQO) at 16 kHz (resampled when needed)."""
    return _pesq(reference, estimate, sample_rate, "wb")


@register("pesq_nb")
def pesq_nb(*, reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """P.862 narrowband PESQ (MOS-LQO)."""
    return _pesq(reference, estimate, sample_rate, "nb")


def _stoi(reference, estimate, sample_rate, extended):
    from pystoi import stoi

    if not np.any(reference):
        raise MetricError("reference is all zeros: STOI undefined")
    with np.errstate(all="ignore"):
        value = float(stoi(reference, estimate, sample_rate, extended=extended))
    if not np.isfinite(value):
        raise MetricError("STOI undefined (too short or silent after VAD)")
    return value


@register("stoi")
def stoi(*, reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    return _stoi(reference, estimate, sample_rate, False)


@register("estoi")
def estoi(*, reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    return _stoi(reference, estimate, sample_rate, True)


@register("si_sdr")
def si_sdr(*, reference: np.ndarray, estimate: np.ndarray, sample_rate: int = 0) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019), zero-mean signals."""
    ref = reference.astype(np.float64) - reference.mean()
    est = estimate.astype(np.float64) - estimate.mean()
    energy = np.dot(ref, ref)
    if energy == 0:
        raise MetricError("reference is silent: SI-SDR undefined")
    if not np.any(est):
        raise MetricError("estimate is silent: SI-SDR is -inf")
    target = np.dot(est, ref) / energy * ref
    noise = est - target
    return float(10 * np.log10(np.dot(target, target) / max(np.dot(noise, noise), 1e-20)))


def _mags(reference, estimate, sample_rate, n_fft=None):
    import torch

    from .config import AudioConfig
    from .mel import magnitude

    n_fft = n_fft or (1024 if sample_rate > 16000 else 512)
    cfg = AudioConfig(name="metric", sample_rate=sample_rate, n_fft=n_fft, hop_length=n_fft // 4,
                      win_length=n_fft, n_mels=40, fmax=sample_rate / 2)
    y = torch.from_numpy(np.stack([reference, estimate]).astype(np.float32))
    m = magnitude(y, cfg).numpy()
    return m[0], m[1], cfg


@register("spectral_convergence")
def spectral_convergence(*, reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """||S_ref - S_est||_F / ||S_ref||_F of STFT magnitudes (lower is better)."""
    r, e, _ = _mags(reference, estimate, sample_rate)
    denom = np.linalg.norm(r)
    if denom == 0:
        raise MetricError("reference is silent: spectral convergence undefined")
    return float(np.linalg.norm(r - e) / denom)


@register("lsd")
def log_spectral_distance(*, reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """Log-spectral distance in dB: mean over frames of RMS over bins of 10 log10(P_ref/P_est)."""
    r, e, _ = _mags(reference, estimate, sample_rate)
    d = 10 * (np.log10(np.maximum(r ** 2, 1e-10)) - np.log10(np.maximum(e ** 2, 1e-10)))
    return float(np.mean(np.sqrt(np.mean(d ** 2, axis=0))))


@register("mcd")
def mel_cepstral_distortion(*, reference: np.ndarray, estimate: np.ndarray, sample_rate: int,
                            n_mfcc: int = 13) -> float:
    """Mel-cepstral distortion in dB over MFCCs 1..n_mfcc-1 (c0, the energy, excluded):
    (10/ln 10) * sqrt(2 * sum_k (c_k - c'_k)^2), averaged over frames. MFCCs from a 40-band
    log-power mel (DCT-II, ortho), frame by frame (equal lengths, no time warping)."""
    import scipy.fft

    from .mel import _filterbank_np

    r, e, cfg = _mags(reference, estimate, sample_rate)
    fb = _filterbank_np(cfg)
    cr = scipy.fft.dct(np.log(np.maximum(fb @ r ** 2, 1e-10)), axis=0, norm="ortho")[1:n_mfcc]
    ce = scipy.fft.dct(np.log(np.maximum(fb @ e ** 2, 1e-10)), axis=0, norm="ortho")[1:n_mfcc]
    return float(np.mean(10 / np.log(10) * np.sqrt(2 * np.sum((cr - ce) ** 2, axis=0))))


_DNSMOS_CACHE: dict = {}


def _dnsmos(estimate: np.ndarray, sample_rate: int) -> dict:
    key = (id(estimate), len(estimate))
    if key not in _DNSMOS_CACHE:
        try:
            from speechmos import dnsmos
        except ImportError as exc:  # pragma: no cover - installed with the package
            raise MetricError(f"DNSMOS needs the speechmos package ({exc})") from None
        y = _to_rate(estimate, sample_rate, 16000).astype(np.float32)
        peak = np.abs(y).max()
        if peak == 0:
            raise MetricError("silent signal: DNSMOS undefined")
        if peak > 1:
            y = y / peak
        _DNSMOS_CACHE.clear()
        _DNSMOS_CACHE[key] = dnsmos.run(y, sr=16000)
    return _DNSMOS_CACHE[key]


@register("dnsmos_ovrl", intrusive=False)
def dnsmos_ovrl(*, estimate: np.ndarray, sample_rate: int, reference=None) -> float:
    """DNSMOS P.835 overall quality (non-intrusive; speechmos' bundled ONNX models)."""
    return float(_dnsmos(estimate, sample_rate)["ovrl_mos"])


@register("dnsmos_sig", intrusive=False)
def dnsmos_sig(*, estimate: np.ndarray, sample_rate: int, reference=None) -> float:
    return float(_dnsmos(estimate, sample_rate)["sig_mos"])


@register("dnsmos_bak", intrusive=False)
def dnsmos_bak(*, estimate: np.ndarray, sample_rate: int, reference=None) -> float:
    return float(_dnsmos(estimate, sample_rate)["bak_mos"])


DEFAULT_METRICS = ("pesq_wb", "stoi", "estoi", "si_sdr", "spectral_convergence", "lsd", "mcd")
