"""Objective speech metrics, each ``fn(*, reference, estimate, sample_rate) -> float``.

A metric that cannot be computed for an item raises :class:`MetricError` with the reason;
the scorer records NaN and that reason (never 0.0, never a running mean). Arguments are
keyword-only so that reference and estimate cannot be swapped by position.
"""
from __future__ import annotations

import faulthandler
import hashlib
import os
import pickle
import signal
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from pipeline.errors import PipelineError

PESQ_RATE = 16000


class MetricError(PipelineError, ValueError):
    """This metric is undefined for this item (silence, too short, ...)."""


@dataclass(frozen=True)
class Metric:
    """A registered metric: the function and what a report says of it."""
    fn: Callable[..., float]
    unit: str
    lower_is_better: bool = False
    intrusive: bool = True               # needs a reference
    default: bool = False                # in `pipeline score`'s default set (with references)


METRICS: dict[str, Metric] = {}


def register(name: str, unit: str, *, lower_is_better: bool = False, intrusive: bool = True,
             default: bool = False):
    """Declare a metric once: its function, unit, direction, whether it needs a reference
    and whether `pipeline score` computes it by default."""
    def deco(fn):
        METRICS[name] = Metric(fn, unit, lower_is_better, intrusive, default)
        return fn
    return deco


def default_metrics(with_reference: bool) -> list[str]:
    """What `pipeline score` computes when no --metrics is given."""
    if with_reference:
        return [n for n, m in METRICS.items() if m.default]
    return ["dnsmos_ovrl"]


def _to_rate(y: np.ndarray, sr: int, target: int) -> np.ndarray:
    if sr == target:
        return y
    import librosa
    return librosa.resample(y, orig_sr=sr, target_sr=target, res_type="soxr_hq")


def _pesq_call(rate: int, ref: np.ndarray, est: np.ndarray, mode: str) -> tuple[str, object]:
    """The pesq library's call, its known failures as ``("err", reason)``."""
    from pesq import NoUtterancesError, PesqError, pesq

    try:
        return "ok", float(pesq(rate, ref, est, mode))
    except NoUtterancesError:
        return "err", ("PESQ found no speech in it (its voice activity detector saw nothing: "
                       "silence, a near-silent signal, or not speech)")
    except PesqError as exc:
        return "err", f"PESQ error: {type(exc).__name__}: {exc}"


def isolated(fn: Callable, *args) -> object:
    """``fn(*args)`` in a forked child, so that a crash of C code (the pesq library segfaults
    on some long recordings, depending on their content) costs this item, not the run.
    Returns what ``fn`` returns (picklable); a child killed by a signal raises
    :class:`MetricError` naming it. Where ``os.fork`` is missing, runs in this process."""
    if not hasattr(os, "fork"):
        return fn(*args)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                    # child: compute, send, leave at once
        try:
            os.close(r)
            faulthandler.disable()              # a crash is reported by the parent, once
            try:
                out = pickle.dumps(("value", fn(*args)))
            except BaseException as exc:        # reported to the parent, which re-raises
                out = pickle.dumps(("raise", f"{type(exc).__name__}: {exc}"))
            with os.fdopen(w, "wb") as fh:
                fh.write(out)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        data = fh.read()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        raise MetricError(f"the library crashed ({name}) on this item; the item is skipped, "
                          "the other items are scored")
    if not data:
        raise MetricError(f"the metric's child process exited with status {status} and no result")
    kind, payload = pickle.loads(data)
    if kind == "raise":
        raise MetricError(f"metric failed: {payload}")
    return payload


def _pesq(reference, estimate, sample_rate, mode):
    """PESQ of the pair; items over :data:`SEGMENT_S` as the length-weighted mean of their
    segments' (P.862 is made for utterances of seconds; the C library segfaulted on a
    30-minute item), over the segments it can score."""
    rate = PESQ_RATE if mode == "wb" or sample_rate >= PESQ_RATE else 8000
    ref, est = _to_rate(reference, sample_rate, rate), _to_rate(estimate, sample_rate, rate)
    if len(ref) < rate // 4:
        raise MetricError(f"too short for PESQ ({len(ref) / rate:.2f} s < 0.25 s)")
    for name, y in (("reference", ref), ("estimate", est)):
        if not np.any(y):   # pesq's C core raises "cannot convert float NaN" on all zeros
            raise MetricError(f"{name} is silent (all zeros): PESQ undefined")
    values, weights, reason = [], [], ""
    for a, b in _segments(len(ref), int(SEGMENT_S * rate)):
        try:
            kind, value = isolated(_pesq_call, rate, ref[a:b], est[a:b], mode)
        except MetricError as exc:
            kind, value = "err", f"PESQ: {exc}"
        if kind == "err":
            reason = str(value)
        else:
            values.append(float(value))   # type: ignore[arg-type]
            weights.append(b - a)
    if not values:
        raise MetricError(reason)
    return float(np.average(values, weights=weights))


@register("pesq_wb", "MOS-LQO", default=True)
def pesq_wb(*, reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """ITU-T P.862.2 wideband PESQ (MOS-LQO) at 16 kHz (resampled when needed). Undefined
    for audio below 16 kHz (an upsampled 8 kHz reference has no wideband to judge)."""
    if sample_rate < PESQ_RATE:
        raise MetricError(f"wideband PESQ needs audio of at least {PESQ_RATE} Hz; this pair is "
                          f"scored at {sample_rate} Hz (the lower of the two rates): use pesq_nb")
    return _pesq(reference, estimate, sample_rate, "wb")


@register("pesq_nb", "MOS-LQO")
def pesq_nb(*, reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """P.862 narrowband PESQ (MOS-LQO)."""
    return _pesq(reference, estimate, sample_rate, "nb")


# Whole-item arrays of a long recording are large (pystoi's float64 copies: ESTOI of a
# 20-minute item peaked at 3.7 GB; the STFTs of the spectral metrics and the mel-cepstra of
# MCD likewise). Longer items are scored in segments of this length (the last one takes any
# remainder shorter than half a segment): STOI, LSD and MCD as the length-weighted mean of
# the segments' values, spectral convergence from the segments' summed norms. Each is itself
# a mean over short windows or frames, so only those across a cut (and STOI's silence
# threshold, MCD's alignment, per segment) differ (BENCHMARKS.md: 5-minute items).
SEGMENT_S = 60.0


def _segments(n: int, size: int) -> list[tuple[int, int]]:
    if n <= size:
        return [(0, n)]
    cuts = list(range(0, n, size))
    if n - cuts[-1] < size // 2:
        cuts.pop()
    return [(a, b) for a, b in zip(cuts, cuts[1:] + [n])]


def _by_segments(reference: np.ndarray, estimate: np.ndarray, sample_rate: int,
                 one: Callable[[np.ndarray, np.ndarray], tuple[float, float]]) -> float:
    """The length-weighted mean over :data:`SEGMENT_S` segments of ``one(r, e)``, which
    returns a segment's value and weight (its frames)."""
    values, weights = zip(*(one(reference[a:b], estimate[a:b]) for a, b in
                            _segments(len(reference), int(SEGMENT_S * sample_rate))))
    return float(np.average(values, weights=weights))


def _stoi(reference, estimate, sample_rate, extended):
    from pystoi import stoi

    if not np.any(reference):
        raise MetricError("reference is all zeros: STOI undefined")
    values, weights = [], []
    for a, b in _segments(len(reference), int(SEGMENT_S * sample_rate)):
        with np.errstate(all="ignore"):
            v = float(stoi(reference[a:b], estimate[a:b], sample_rate, extended=extended))
        if np.isfinite(v):
            values.append(v)
            weights.append(b - a)
    if not values:
        raise MetricError("STOI undefined (too short or silent after VAD)")
    return float(np.average(values, weights=weights))


@register("stoi", "0-1", default=True)
def stoi(*, reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    return _stoi(reference, estimate, sample_rate, False)


@register("estoi", "0-1", default=True)
def estoi(*, reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    return _stoi(reference, estimate, sample_rate, True)


@register("si_sdr", "dB", default=True)
def si_sdr(*, reference: np.ndarray, estimate: np.ndarray, sample_rate: int = 0) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019), zero-mean signals. From the
    signals' inner products, accumulated in float64 over 1M-sample chunks: no whole-item
    copies (a 30-minute item held five of 230 MB)."""
    mr, me = float(np.mean(reference, dtype=np.float64)), float(np.mean(estimate, dtype=np.float64))
    rr = er = ee = 0.0
    for a in range(0, len(reference), 1 << 20):
        r = reference[a:a + (1 << 20)].astype(np.float64) - mr
        e = estimate[a:a + (1 << 20)].astype(np.float64) - me
        rr, er, ee = rr + float(np.dot(r, r)), er + float(np.dot(e, r)), ee + float(np.dot(e, e))
    if rr == 0:
        raise MetricError("reference is silent: SI-SDR undefined")
    if ee == 0:
        raise MetricError("estimate is silent: SI-SDR is -inf")
    target = er * er / rr                    # ||alpha ref||^2 with alpha = <e, r> / <r, r>
    return float(10 * np.log10(target / max(ee - target, 1e-20)))


def _mags(reference, estimate, sample_rate, n_fft=None):
    import torch

    from pipeline.config import AudioConfig
    from pipeline.dsp.mel import magnitude

    n_fft = n_fft or (1024 if sample_rate > 16000 else 512)
    cfg = AudioConfig(name="metric", sample_rate=sample_rate, n_fft=n_fft, hop_length=n_fft // 4,
                      win_length=n_fft, n_mels=40, fmax=sample_rate / 2)
    y = torch.from_numpy(np.stack([reference, estimate]).astype(np.float32))
    m = magnitude(y, cfg).numpy()
    return m[0], m[1], cfg


@register("spectral_convergence", "ratio", lower_is_better=True, default=True)
def spectral_convergence(*, reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """||S_ref - S_est||_F / ||S_ref||_F of STFT magnitudes (lower is better)."""
    import torch

    from pipeline.dsp.spectral import spectral_convergence as sc

    def one(ref: np.ndarray, est: np.ndarray) -> tuple[float, float]:
        """A segment's SC squared and the reference's energy there: the whole item's SC is
        the energy-weighted root mean square of the segments'."""
        r, e, _ = _mags(ref, est, sample_rate)
        energy = float(np.sum(r.astype(np.float64) ** 2))
        if not energy:
            return 0.0, 0.0
        return float(sc(reference=torch.from_numpy(r), estimate=torch.from_numpy(e), dim=None)) ** 2, energy

    parts = [one(reference[a:b], estimate[a:b])
             for a, b in _segments(len(reference), int(SEGMENT_S * sample_rate))]
    if not sum(w for _, w in parts):
        raise MetricError("reference is silent: spectral convergence undefined")
    return float(np.sqrt(np.average([v for v, _ in parts], weights=[w for _, w in parts])))


def _power_spectrogram(y: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """``|STFT|^2`` ``[F, T]``: Hann window of ``n_fft``, centred frames, reflect padding
    (torch.stft's defaults, as NU-Wave computes it)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))
    spec = torch.stft(x, n_fft, hop_length=hop, window=torch.hann_window(n_fft), center=True,
                      pad_mode="reflect", return_complex=True)
    return spec.abs().pow(2).numpy()


@register("lsd", "log10 power (NU-Wave)", lower_is_better=True, default=True)
def log_spectral_distance(*, reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """Log-spectral distance as the super-resolution papers quote it (NU-Wave, AudioSR): STFT
    2048/512 (Hann, centred), ``log10`` of the power clamped at 1e-8, RMS over bins, mean over
    frames. In log10 units: 1/10 of the dB figure (``lsd_db``)."""
    if len(reference) < 2048 // 2 + 1:
        raise MetricError(f"too short for LSD ({len(reference)} samples < 1025)")

    def one(ref: np.ndarray, est: np.ndarray) -> tuple[float, float]:
        r = np.log10(np.maximum(_power_spectrogram(ref, 2048, 512), 1e-8))
        e = np.log10(np.maximum(_power_spectrogram(est, 2048, 512), 1e-8))
        d = np.sqrt(np.mean((r - e) ** 2, axis=0))
        return float(np.mean(d)), len(d)
    return _by_segments(reference, estimate, sample_rate, one)


@register("lsd_db", "dB", lower_is_better=True)
def log_spectral_distance_db(*, reference: np.ndarray, estimate: np.ndarray, sample_rate: int
                             ) -> float:
    """Log-spectral distance in dB: mean over frames of RMS over bins of 10 log10(P_ref/P_est),
    powers floored at 1e-10 (STFT 512/128 at 16 kHz, 1024/256 above)."""
    def one(ref: np.ndarray, est: np.ndarray) -> tuple[float, float]:
        r, e, _ = _mags(ref, est, sample_rate)
        d = 10 * (np.log10(np.maximum(r ** 2, 1e-10)) - np.log10(np.maximum(e ** 2, 1e-10)))
        per_frame = np.sqrt(np.mean(d ** 2, axis=0))
        return float(np.mean(per_frame)), len(per_frame)
    return _by_segments(reference, estimate, sample_rate, one)


# ESPnet's mel-cepstrum settings per sample rate (egs2 pyscripts/utils/evaluate_mcd.py):
# (order, all-pass alpha)
MCEP_PARAMS = {16000: (23, 0.42), 22050: (34, 0.45), 24000: (34, 0.46), 44100: (39, 0.53),
               48000: (39, 0.55)}
MCD_N_FFT, MCD_SHIFT = 1024, 256


def mel_cepstra(y: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mel-cepstra ``[T, order + 1]`` (c0..c_order) of ESPnet's MCD recipe: the waveform
    scaled to int16 range, Hamming frames of 1024 every 256 samples (no padding), ``pysptk.mcep``
    with eps 1e-6, etype 1 and the order and alpha of :data:`MCEP_PARAMS`."""
    try:
        with warnings.catch_warnings():     # pysptk imports pkg_resources, which warns
            warnings.simplefilter("ignore", UserWarning)
            import pysptk
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise MetricError(f"MCD needs pysptk ({exc}); pip install pysptk") from None
    if sample_rate not in MCEP_PARAMS:
        raise MetricError(f"MCD (ESPnet recipe) is defined for {sorted(MCEP_PARAMS)} Hz, "
                          f"not {sample_rate}")
    order, alpha = MCEP_PARAMS[sample_rate]
    x = np.asarray(y, dtype=np.float64) * 32768.0
    n = (len(x) - MCD_N_FFT) // MCD_SHIFT + 1
    if n < 1:
        raise MetricError(f"too short for MCD ({len(x)} samples < {MCD_N_FFT})")
    frames = np.lib.stride_tricks.sliding_window_view(x, MCD_N_FFT)[::MCD_SHIFT][:n]
    frames = frames * pysptk.sptk.hamming(MCD_N_FFT)
    return np.stack([pysptk.mcep(f, order, alpha, eps=1e-6, etype=1) for f in frames])


def _mcd(reference, estimate, sample_rate, dtw):
    return _by_segments(reference, estimate, sample_rate,
                        lambda r, e: _mcd_segment(r, e, sample_rate, dtw))


def _mcd_segment(reference, estimate, sample_rate, dtw) -> tuple[float, float]:
    ref, est = mel_cepstra(reference, sample_rate), mel_cepstra(estimate, sample_rate)
    if dtw:
        from fastdtw import fastdtw
        from scipy.spatial.distance import euclidean

        _, path = fastdtw(est, ref, dist=euclidean)
        i, j = np.array(path).T
        est, ref = est[i], ref[j]
    else:
        n = min(len(ref), len(est))
        est, ref = est[:n], ref[:n]
    return (float(np.mean(10.0 / np.log(10.0) * np.sqrt(2.0 * np.sum((est - ref) ** 2, axis=1)))),
            len(ref))


@register("mcd", "dB (ESPnet, DTW)", lower_is_better=True, default=True)
def mel_cepstral_distortion(*, reference: np.ndarray, estimate: np.ndarray, sample_rate: int
                            ) -> float:
    """Mel-cepstral distortion in dB as ESPnet computes it (egs2 ``evaluate_mcd.py``):
    :func:`mel_cepstra` of both, aligned by fastdtw (Euclidean), then
    ``10/ln(10) * sqrt(2 * sum_k (c_k - c'_k)^2)`` over c0..c_order, averaged over the path."""
    return _mcd(reference, estimate, sample_rate, dtw=True)


@register("mcd_plain", "dB (ESPnet, no DTW)", lower_is_better=True)
def mel_cepstral_distortion_plain(*, reference: np.ndarray, estimate: np.ndarray,
                                  sample_rate: int) -> float:
    """:func:`mel_cepstral_distortion` frame by frame, without time warping."""
    return _mcd(reference, estimate, sample_rate, dtw=False)


_DNSMOS_CACHE: dict = {}


def _dnsmos(estimate: np.ndarray, sample_rate: int) -> dict:
    # keyed by content: the three DNSMOS columns of one item share one model run
    key = (hashlib.sha1(np.ascontiguousarray(estimate).tobytes()).hexdigest(), sample_rate)
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


@register("dnsmos_ovrl", "MOS", intrusive=False)
def dnsmos_ovrl(*, estimate: np.ndarray, sample_rate: int, reference=None) -> float:
    """DNSMOS P.835 overall quality (non-intrusive; speechmos' bundled ONNX models)."""
    return float(_dnsmos(estimate, sample_rate)["ovrl_mos"])


@register("dnsmos_sig", "MOS", intrusive=False)
def dnsmos_sig(*, estimate: np.ndarray, sample_rate: int, reference=None) -> float:
    return float(_dnsmos(estimate, sample_rate)["sig_mos"])


@register("dnsmos_bak", "MOS", intrusive=False)
def dnsmos_bak(*, estimate: np.ndarray, sample_rate: int, reference=None) -> float:
    return float(_dnsmos(estimate, sample_rate)["bak_mos"])
