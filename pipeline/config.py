"""Audio / mel conventions as frozen dataclasses, loaded from ``configs/*.toml``.

A mel spectrogram is only meaningful with the exact convention that produced it, so every
store carries its :class:`AudioConfig` in its attributes and every model carries the one it
was trained on. :meth:`AudioConfig.diff` names the fields that disagree.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

import tomllib

from pipeline.errors import PipelineError

LOG_KINDS = ("ln", "log10", "db", "none")
MEL_SCALES = ("slaney", "htk")
NORMS = ("slaney", "none")
PAD_MODES = ("constant", "reflect")

# Presets are package data (a wheel carries them); the repo's top-level configs/ links here.
CONFIG_DIR = Path(str(resources.files("pipeline") / "presets"))


class ConfigError(PipelineError, ValueError):
    """A configuration value is invalid or two configurations disagree."""


@dataclass(frozen=True)
class AudioConfig:
    """How audio becomes a (log-)mel spectrogram.

    ``power`` is the exponent applied to the STFT magnitude before the filterbank (1: magnitude
    mel, 2: power mel). ``log`` compresses with ``clamp`` as floor: ``ln`` -> ln(max(x, clamp)),
    ``log10`` -> log10(max(x, clamp)), ``db`` -> 10*log10(max(x, clamp)) (power) or
    20*log10 (magnitude), ``none`` -> linear. ``center`` follows torch.stft/librosa (frame t
    centred at t*hop, padded with ``pad_mode``); ``center=False`` pads (n_fft-hop)//2 on both
    sides with ``pad_mode`` as HiFi-GAN does.
    """

    name: str = "mel80-16k"
    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float = 8000.0
    mel_scale: str = "slaney"
    norm: str = "slaney"
    power: float = 1.0
    log: str = "ln"
    clamp: float = 1e-5
    center: bool = True
    pad_mode: str = "constant"

    def __post_init__(self) -> None:
        problems = []
        if self.sample_rate <= 0:
            problems.append(f"sample_rate must be > 0, got {self.sample_rate}")
        if self.win_length > self.n_fft:
            problems.append(f"win_length ({self.win_length}) must be <= n_fft ({self.n_fft})")
        if not 0 < self.hop_length <= self.win_length:
            problems.append(f"hop_length must be in (0, win_length], got {self.hop_length}")
        if self.n_mels <= 0:
            problems.append(f"n_mels must be > 0, got {self.n_mels}")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            problems.append(
                f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={self.fmin}, fmax={self.fmax}, "
                f"sample_rate={self.sample_rate}"
            )
        for name, allowed in (("mel_scale", MEL_SCALES), ("norm", NORMS), ("log", LOG_KINDS),
                              ("pad_mode", PAD_MODES)):
            if getattr(self, name) not in allowed:
                problems.append(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.power not in (1.0, 2.0):
            problems.append(f"power must be 1 or 2, got {self.power}")
        if self.clamp <= 0:
            problems.append(f"clamp must be > 0, got {self.clamp}")
        if problems:
            raise ConfigError("invalid audio config: " + "; ".join(problems))

    @property
    def n_freq(self) -> int:
        return self.n_fft // 2 + 1

    def n_frames(self, n_samples: int) -> int:
        """Number of STFT frames for a signal of ``n_samples`` samples."""
        if self.center:
            return 1 + n_samples // self.hop_length
        pad = (self.n_fft - self.hop_length) // 2
        return max(0, 1 + (n_samples + 2 * pad - self.n_fft) // self.hop_length)

    def n_samples(self, n_frames: int) -> int:
        """The signal length whose STFT has ``n_frames`` frames (inverse of :meth:`n_frames`)."""
        return (n_frames - 1) * self.hop_length if self.center else n_frames * self.hop_length

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AudioConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown audio config field(s): {', '.join(unknown)}; "
                              f"known fields: {', '.join(sorted(known))}")
        kinds = {f.name: f.type for f in fields(cls)}
        clean = {}
        for key, value in data.items():
            if kinds[key] == "float" and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            clean[key] = value
        return cls(**clean)

    def replace(self, **changes: Any) -> "AudioConfig":
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes)

    def diff(self, other: "AudioConfig", ignore: tuple[str, ...] = ("name",)) -> list[str]:
        """Fields whose values differ, as ``'field: self != other'`` strings."""
        out = []
        for f in fields(self):
            if f.name in ignore:
                continue
            a, b = getattr(self, f.name), getattr(other, f.name)
            if a != b:
                out.append(f"{f.name}: {a!r} != {b!r}")
        return out


def preset_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.toml") if not p.stem.startswith("cluster"))


def load_config(name_or_path: str | Path | None = None) -> AudioConfig:
    """Load an :class:`AudioConfig` from a preset name (``mel80-16k``) or a TOML path.

    The TOML holds the fields at top level or under an ``[audio]`` table.
    """
    if name_or_path is None:
        return AudioConfig()
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = CONFIG_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise ConfigError(
            f"config {str(name_or_path)!r} not found: give a TOML file or one of the presets "
            f"{', '.join(preset_names())}"
        )
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    data = data.get("audio", data)
    data.setdefault("name", path.stem)
    try:
        return AudioConfig.from_dict(data)
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def with_overrides(config: AudioConfig, **fields: Any) -> AudioConfig:
    """``config`` with the given fields replaced (``None``: keep the config's value), renamed
    ``NAME+custom``. Changing ``n_fft`` alone keeps the window within it."""
    clean = {k: v for k, v in fields.items() if v is not None}
    if "n_fft" in clean and "win_length" not in clean:
        clean["win_length"] = min(config.win_length, clean["n_fft"])
    return config.replace(name=f"{config.name}+custom", **clean) if clean else config
