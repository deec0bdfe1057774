"""The learned mel inverter: pseudo-inverse estimate refined by a conv encoder-decoder.

``PInvConvSkip``: the log pseudo-inverse magnitude ``p = ln(max(A^+ mel, 1e-5))`` (with the
log-mel) feeds a 1-D convolutional U-Net over time with frequency bins as channels (two stride-2 stages,
skip connections between encoder and decoder); its output is a residual added to ``p``, and
the result is clamped to the largest log-magnitude the mel allows (each bin's energy cannot
exceed what its bands hold). Optionally (``lowband`` channels) a 2-D conv net
over (time, frequency) then refines the bins below ~1.25 kHz (:mod:`pipeline.models.lowband`),
clamped again. The model predicts the log-magnitude; the magnitude is its exp.
Shapes: mel ``[B, T, M]`` -> log-magnitude ``[B, T, F]``.
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline.algorithms.invert import log_pinv
from pipeline.config import AudioConfig
from pipeline.dsp.mel import log_magnitude_bound
from pipeline.errors import UsageError
from pipeline.io.weights import WeightsError, load_state, pick_for, resolve
from pipeline.models.lowband import LowBand2D

LOG_FLOOR = 1e-5
REFINES = ("", "lobes")   # what may follow the net at inference (ModelConfig.refine)
SCALE = 5.0     # log-magnitudes span about [-11.5, 4]: divided by SCALE for the network


@dataclass(frozen=True)
class ModelConfig:
    channels: int = 128
    kernel: int = 5
    depth: int = 2           # stride-2 stages of the U-Net
    mel_bound: bool = True   # clamp the output to the bound the mel implies (mel.log_magnitude_bound)
    refine: str = ""         # after the net, at inference: "" or "lobes" (algorithms.lobes)
    lowband: int = 0         # channels of the low-band 2-D net after the 1-D net (0: none)
    lowband_layers: int = 4  # its hidden layers (models.lowband.LowBand2D)
    lowband_hz: float = 1250.0       # the bins it refines: below this frequency
    lowband_time_kernel: int = 3     # its hidden convs' extent over time (frames)


# Card fields of architectures this version no longer builds, and the value at which a card
# describes the net it builds (older cards carry them)
RETIRED = {"backbone": "unet", "mult": None, "dilations": None, "lowband_separable": False,
           "lowband_down": 1}


def model_config(card_model: dict, source: str) -> ModelConfig:
    """A card's ``model`` section as a :class:`ModelConfig`; retired fields at the value of the
    net this version builds are dropped, others refused naming the field."""
    hp = {"mel_bound": False, **card_model}   # cards older than ``mel_bound``: no clamp
    for key, same in RETIRED.items():
        if key in hp:
            value = hp.pop(key)
            if same is not None and value != same:
                raise WeightsError(f"weights {source} need {key}={value!r}, which this version "
                                   "of pipeline no longer builds; retrain them, or use the "
                                   "version that made them")
    return ModelConfig(**hp)


def low_band_net(audio: AudioConfig, model: ModelConfig) -> LowBand2D:
    """The low-band 2-D net ``model``'s ``lowband*`` fields describe."""
    return LowBand2D(audio.sample_rate, audio.n_fft, model.lowband, model.lowband_layers,
                     model.lowband_hz, model.lowband_time_kernel)


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, stride=stride, padding=kernel // 2)
        self.norm = nn.LayerNorm(cout)   # per frame, over channels: no statistics across time,
        self.act = nn.GELU()             # so padded frames never change the other frames

    def forward(self, x):
        return self.act(self.norm(self.conv(x).transpose(1, 2)).transpose(1, 2))


class _CapDown(torch.autograd.Function):
    """``min(out, bound)`` whose gradient, where ``out`` exceeds the bound, still passes when
    it would lower ``out`` (training only; same values as the hard minimum).

    A hard minimum passes no gradient where the net exceeds the bound, so a net that
    overshoots there early stays stuck at the cap. Passing every gradient (straight through)
    runs away instead: where float rounding puts the truth a hair above the bound, the L1
    gradient pushes the output up by the same amount at every step however far above it is.
    The upward half is what a capped output cannot use, so only that half is blocked."""

    @staticmethod
    def forward(ctx, out: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
        over = out > bound
        ctx.save_for_backward(over)
        return torch.where(over, bound, out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (over,) = ctx.saved_tensors
        return torch.where(over, grad.clamp_min(0), grad), None


class PInvConvSkip(nn.Module):
    def __init__(self, audio: AudioConfig, model: ModelConfig = ModelConfig()):
        super().__init__()
        self.audio, self.hparams = audio, model
        c, k = model.channels, model.kernel
        if model.refine not in REFINES:
            raise UsageError(f"unknown inverter refinement {model.refine!r}: "
                             + " or ".join(repr(r) for r in REFINES))
        self.low = low_band_net(audio, model) if model.lowband else None
        self.inp = _Block(audio.n_freq + audio.n_mels, c, 3)
        self.down = nn.ModuleList(_Block(c, c, k, stride=2) for _ in range(model.depth))
        self.mid = _Block(c, c, k)
        self.up = nn.ModuleList(_Block(2 * c, c, k) for _ in range(model.depth))
        self.out = nn.Conv1d(2 * c, audio.n_freq, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)  # type: ignore[arg-type]  # starts as the pseudo-inverse

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Compressed mel ``[B, T, M]`` -> log-magnitude ``[B, T, F]``."""
        T = mel.shape[1]
        p = log_pinv(mel, self.audio, LOG_FLOOR)                       # [B, T, F]
        x = torch.cat([p / SCALE, mel.clamp_min(-20) / SCALE], -1).transpose(1, 2)
        # up to 2^depth - 1 copies of the last frame, in one contiguous copy (the "replicate"
        # pad's kernel on this transposed view was 6 % of the forward pass)
        pad = (-T) % (2 ** len(self.down))
        x = torch.cat([x, x[..., -1:].expand(-1, -1, pad)], 2)
        h0 = self.inp(x)
        skips, h = [], h0
        for blk in self.down:
            skips.append(h)
            h = blk(h)
        h = self.mid(h)
        for blk, s in zip(self.up, reversed(skips)):
            h = nn.functional.interpolate(h, size=s.shape[-1], mode="nearest")
            h = blk(torch.cat([h, s], 1))
        res = self.out(torch.cat([h, h0], 1))[..., :T]
        return self._finish(p + SCALE * res.transpose(1, 2), p, mel)

    def _finish(self, out: torch.Tensor, p: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        """The 1-D net's log-magnitude bounded, then (if any) the low-band 2-D net's
        refinement of it (fed ``p``, the log pseudo-inverse), bounded again."""
        bound = log_magnitude_bound(mel, self.audio) if self.hparams.mel_bound else None
        out = self._cap(out, bound)
        if self.low is not None:
            out = self._cap(self.low(out, p, SCALE), bound)
        return out

    def magnitude(self, mel: torch.Tensor) -> torch.Tensor:
        """What inference uses: the magnitude (exp of :meth:`forward`), then the card's
        refinement (``lobes``: :func:`pipeline.algorithms.lobes.refine_low_band`)."""
        mag = self(mel).exp()
        if self.hparams.refine == "lobes":
            from pipeline.algorithms.lobes import refine_low_band
            mag = refine_low_band(mag, mel, self.audio)
        return mag

    def _cap(self, out: torch.Tensor, bound: torch.Tensor | None) -> torch.Tensor:
        # no bin louder than its mel bands allow: the output is exp'd, and one overshoot
        # on a loud, clipped validation file (2x at its peak) was 97 % of the corpus error
        if bound is None:
            return out
        if self.training and torch.is_grad_enabled():
            return _CapDown.apply(out, bound)
        return torch.minimum(out, bound)

    def card(self) -> dict:
        return {"arch": "PInvConvSkip", "audio": self.audio.to_dict(), "model": asdict(self.hparams)}


@torch.inference_mode()
def model_invert(mel: torch.Tensor, cfg: AudioConfig, model: PInvConvSkip | None = None
                 ) -> torch.Tensor:
    if model is None:
        raise UsageError("method 'model' needs a loaded model (weights)")
    return model.magnitude(mel)


def load_invert_model(name_or_path: str | Path | None, config: AudioConfig,
                      device: torch.device | str = "cpu"):
    """The shipped (or given) inverter for ``config``; refuses weights of another config."""
    name_or_path = name_or_path or pick_for(config, "PInvConvSkip")
    state, card = load_state(name_or_path)
    audio = AudioConfig.from_dict(card["audio"])
    diff = audio.diff(config)
    if diff:
        raise WeightsError(f"weights {name_or_path} were trained on another audio config than "
                           f"the input's: {'; '.join(diff)}")
    model = PInvConvSkip(audio, model_config(card["model"], str(name_or_path)))
    model.load_state_dict(state)
    return model.to(device).eval()


def inverter_digest(name_or_path: str | Path) -> str:
    """What identifies an inverter's output, as stages record it: its weights' sha256, plus
    the card's refinement (``+lobes``), since the same weights refined give other magnitudes."""
    from pipeline.io.weights import read_card
    card = read_card(resolve(name_or_path))
    refine = card.get("model", {}).get("refine", "")
    return card["sha256"] + (f"+{refine}" if refine else "")


def shared_invert_model(name_or_path: str | Path | None, config: AudioConfig,
                        device: torch.device | str = "cpu"):
    """:func:`load_invert_model`, loaded once per process for inference: shard tasks run one
    after another in a process (a dask worker, or this one), and each loaded the model again
    (67 ms: the weights' checksum, the file, and the random initialisation the weights then
    replace). Keyed by the file's path, size and modification time, the config and the
    device. The model is shared: callers must not train, move or modify it."""
    path = resolve(name_or_path or pick_for(config, "PInvConvSkip"))
    if not path.is_file():
        return load_invert_model(path, config, device)   # which says what is missing
    st = path.stat()
    return _loaded(str(path), st.st_size, st.st_mtime_ns, config, str(device))


@functools.lru_cache(maxsize=4)
def _loaded(path: str, size: int, mtime_ns: int, config: AudioConfig, device: str):
    return load_invert_model(path, config, device)
