"""Reading and writing audio: soundfile for I/O, soxr (through librosa) for resampling."""
from __future__ import annotations

import os
import tempfile
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


def info(path: str | Path, raw_sample_rate: int = 16000) -> dict:
    """Header facts: sample_rate, channels, num_samples, duration. Raises AudioError."""
    path = Path(path)
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
    path = Path(path)
    meta = info(path, raw_sample_rate=source_rate or 16000)
    try:
        if raw_format(path):
            data, sr = sf.read(str(path), samplerate=meta["sample_rate"], channels=1,
                               subtype="PCM_16", format="RAW", endian="LITTLE",
                               dtype="float32", always_2d=True)
        else:
            data, sr = sf.read(str(path), dtype="float32", always_2d=True)
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


def write_wav(path: str | Path, y: np.ndarray, sample_rate: int) -> None:
    """Write 16-bit PCM wav atomically (temp file + rename): a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".wav")
    os.close(fd)
    try:
        sf.write(tmp, np.clip(y, -1.0, 1.0), sample_rate, subtype="PCM_16")
        os.chmod(tmp, 0o666 & ~_umask())        # mkstemp makes 0600; a plain file honours the umask
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
