"""Reading and writing audio: soundfile for I/O, soxr (through librosa) for resampling."""
from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from pipeline.errors import PipelineError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".raw", ".pcm", ".aiff", ".aif", ".opus")
RAW_EXTENSIONS = (".raw", ".pcm")


class AudioError(PipelineError, RuntimeError):
    """An audio file could not be used; the message names the file and the reason."""


def raw_format(path: str | Path) -> bool:
    return Path(path).suffix.lower() in RAW_EXTENSIONS


def segment_source(path: str | Path, start: float, end: float) -> str:
    """The source string of a segment ``[start, end)`` seconds of a recording (a lhotse
    supervision, a Kaldi segment): read by :func:`load` and :func:`info` as that span."""
    return f"{path}#{start:.6f},{end:.6f}"


def split_segment(path: str | Path) -> tuple[Path, float | None, float | None]:
    """``FILE#START,END`` -> (FILE, START, END); a plain path -> (path, None, None)."""
    p = Path(path)
    head, sep, tail = str(path).rpartition("#")
    if sep and not p.exists():
        a, comma, b = tail.partition(",")
        try:
            return Path(head), float(a), float(b)
        except ValueError:
            pass
    return p, None, None


def info(path: str | Path, raw_sample_rate: int = 16000) -> dict:
    """Header facts: sample_rate, channels, num_samples, duration (of the segment, for a
    :func:`segment_source`). Raises AudioError."""
    path, start, end = split_segment(path)
    if start is not None and end is not None:
        whole = info(path, raw_sample_rate)
        sr = whole["sample_rate"]
        a, b = int(round(start * sr)), min(int(round(end * sr)), whole["num_samples"])
        if not 0 <= a < b:
            raise AudioError(f"{path}: segment {start:g}-{end:g} s lies outside its "
                             f"{whole['duration']:.2f} s")
        return {**whole, "num_samples": b - a, "duration": (b - a) / sr}
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file")
    if not path.exists():
        raise AudioError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    if not os.access(path, os.R_OK):     # libsndfile says only "System error."
        raise AudioError(f"permission denied: {path}")
    if raw_format(path):
        n = path.stat().st_size // 2
        return {"sample_rate": raw_sample_rate, "channels": 1, "num_samples": n,
                "duration": n / raw_sample_rate, "format": "raw-pcm16"}
    try:
        i = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError(f"{path}: not readable as audio ({exc})") from exc
    return {"sample_rate": int(i.samplerate), "channels": int(i.channels),
            "num_samples": int(i.frames), "duration": float(i.frames) / i.samplerate,
            "format": i.format.lower()}


def load(path: str | Path, sample_rate: int, *, source_rate: int | None = None) -> np.ndarray:
    """Read ``path`` as mono float32 at ``sample_rate``.

    ``.raw``/``.pcm`` files are headerless 16-bit little-endian mono PCM at ``source_rate``
    (default 16 kHz). Raises :class:`AudioError` for unreadable, empty, or non-finite audio.
    """
    meta = info(path, raw_sample_rate=source_rate or 16000)
    path, start, _ = split_segment(path)
    # a segment: its samples only (frames of the file at its own rate)
    span = ({"start": int(round(start * meta["sample_rate"])), "frames": meta["num_samples"]}
            if start is not None else {})
    try:
        if raw_format(path):
            data, sr = sf.read(str(path), samplerate=meta["sample_rate"], channels=1,
                               subtype="PCM_16", format="RAW", endian="LITTLE",
                               dtype="float32", always_2d=True, **span)
        else:
            data, sr = sf.read(str(path), dtype="float32", always_2d=True, **span)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise AudioError(f"{path}: could not decode audio ({exc})") from exc
    if data.shape[0] == 0:
        raise AudioError(f"{path}: contains no samples")
    y = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(y).all():
        raise AudioError(f"{path}: contains NaN or Inf samples")
    if sr != sample_rate:
        import librosa  # deferred: slow import, only needed to resample

        y = librosa.resample(y, orig_sr=sr, target_sr=sample_rate, res_type="soxr_hq")
    return np.ascontiguousarray(y, dtype=np.float32)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@dataclass(frozen=True)
class AudioFormat:
    """How outputs are written: ``wav`` or ``flac`` (lossless, about half the size), and the
    sample type: ``PCM_16`` (default), ``PCM_24``, or ``FLOAT`` (wav only; keeps samples
    beyond full scale)."""
    format: str = "wav"
    subtype: str = "PCM_16"

    def __post_init__(self) -> None:
        if self.format not in ("wav", "flac"):
            raise AudioError(f"unknown audio format {self.format!r}: wav or flac")
        if self.subtype not in ("PCM_16", "PCM_24", "FLOAT"):
            raise AudioError(f"unknown sample type {self.subtype!r}: PCM_16, PCM_24 or FLOAT")
        if self.format == "flac" and self.subtype == "FLOAT":
            raise AudioError("FLAC stores integer samples: use --subtype PCM_16 or PCM_24, or "
                             "--format wav for FLOAT")

    @property
    def suffix(self) -> str:
        return "." + self.format

    def record(self) -> dict:
        """For run records: empty at the default, so records of earlier runs still match."""
        return {} if self == AudioFormat() else {"format": self.format, "subtype": self.subtype}


# An item counts as clipped when more than this fraction of its samples lay beyond full scale
# before the 16-bit write (which clips them): a warning, with the items in the run's report.
CLIPPED_FRACTION = 0.001


@dataclass(frozen=True)
class Level:
    """What a 16-bit write did to a signal's level: its peak before the write (dBFS, above 0
    when it clipped), the fraction of samples beyond full scale (clipped by the write), and
    the gain applied to reach a requested peak (0 dB without one)."""
    peak_dbfs: float
    clipped: float
    gain_db: float = 0.0


def clipped_ids(rows: list[dict]) -> list[str]:
    """The ids of a run report's rows (``clipped``: the fraction, as written or read back)
    whose outputs clipped."""
    return [r["id"] for r in rows if float(r["clipped"]) > CLIPPED_FRACTION]


def to_integers(y: np.ndarray, subtype: str) -> np.ndarray:
    """Float samples -> the integers a PCM file stores, converted and clipped here, so that
    every container holds the same samples (libsndfile floors for wav and rounds for flac):
    ``floor(y * 2^(bits-1))``, as every wav this tool wrote before; PCM_16 as int16, PCM_24 as
    int32 whose top 24 bits are the sample."""
    bits = 16 if subtype == "PCM_16" else 24
    full = float(1 << (bits - 1))
    q = np.multiply(y, np.float32(full), dtype=np.float32)   # exact: float32 holds 24 bits
    np.floor(q, out=q)
    np.clip(q, -full, full - 1, out=q)
    return q.astype(np.int16) if bits == 16 else (q.astype(np.int32) << 8)


def write_wav(path: str | Path, y: np.ndarray, sample_rate: int,
              peak_dbfs: float | None = None, fmt: AudioFormat = AudioFormat()) -> Level:
    """Write audio atomically (temp file + rename): a crash never leaves half a file; 16-bit
    PCM wav unless ``fmt`` says otherwise. ``peak_dbfs``: scale the signal so that its peak
    sits there first (e.g. -1; a silent signal is left as it is). Returns the :class:`Level`
    the file was written at (integer samples clip at full scale; FLOAT ones do not)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    y = np.asarray(y, dtype=np.float32)
    peak = max(float(y.max()), -float(y.min())) if y.size else 0.0
    gain = 1.0 if peak_dbfs is None or peak == 0.0 else 10 ** (peak_dbfs / 20) / peak
    if gain != 1.0:
        y = y * np.float32(gain)
    floating = fmt.subtype == "FLOAT"
    level = Level(20 * math.log10(peak) if peak > 0 else -math.inf,
                  0.0 if floating else float(np.count_nonzero((y > 1.0) | (y < -1.0))) / max(y.size, 1),
                  20 * math.log10(gain))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=fmt.suffix)
    os.close(fd)
    try:
        sf.write(tmp, y if floating else to_integers(y, fmt.subtype), sample_rate,
                 subtype=fmt.subtype, format=fmt.format.upper())
        os.chmod(tmp, 0o666 & ~_umask())        # mkstemp makes 0600; a plain file honours the umask
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return level


def file_level(path: str | Path) -> Level:
    """The :class:`Level` of a file as written (clipped: the fraction of samples at full
    scale, for integer samples): for outputs whose write was not recorded."""
    data, _ = sf.read(str(path), dtype="float32", always_2d=False)
    a = np.abs(data)
    peak = float(a.max()) if a.size else 0.0
    full = 32767 / 32768
    integer = sf.info(str(path)).subtype != "FLOAT"
    return Level(20 * math.log10(peak) if peak else -math.inf,
                 float(np.count_nonzero(a >= full)) / max(a.size, 1) if integer else 0.0)
