"""Shipped and trained weights: ``NAME.pt`` (state_dict only) + ``NAME.json`` (model card).

The card carries the architecture, its hyper-parameters, the audio config the model was
trained on, the sha256 of the ``.pt``, the training data and the validation figures. Loading
verifies the checksum and uses ``torch.load(weights_only=True)``: a pickled object that is not
plain tensors is refused.
"""
from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from pipeline.config import AudioConfig
from pipeline.errors import PipelineError

# Shipped weights are package data (a wheel carries them); the repo's top-level weights/ links
# here.
WEIGHTS_DIR = Path(str(resources.files("pipeline") / "pretrained"))


class WeightsError(PipelineError, RuntimeError):
    """Weights missing, damaged, unsafe, or made for another audio config."""


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it over ``path``: a
    crash mid-write leaves the previous file whole (checkpoints, best epochs, weights)."""
    path = Path(path)
    tmp = path.with_name("." + path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save(state_dict: dict, card: dict[str, Any], path: str | Path, half: bool = False) -> Path:
    """Write ``path`` (.pt) and its card (.json) with the checksum, atomically.

    ``half``: floating tensors stored as float16 (half the size; ``load_state_dict`` casts
    them back to the model's float32)."""
    path = Path(path).with_suffix(".pt")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    save_atomic(state, path)
    card = {**card, "file": path.name, "sha256": sha256(path), "stored_dtype":
            "float16" if half else "float32",
            "bytes": path.stat().st_size}
    path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return path


def resolve(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    pt = p.with_suffix(".pt")
    if (p.suffix in (".pt", ".json") or p.exists()) and (pt.exists() or p.with_suffix(".json").exists()):
        return pt   # either half missing is said by read_card / load_state
    for cand in (WEIGHTS_DIR / f"{name_or_path}.pt", Path(f"{name_or_path}.pt")):
        if cand.exists():     # a shipped name, or a path given without its suffix
            return cand
    raise WeightsError(f"weights {str(name_or_path)!r} not found: give a .pt path or one of "
                       f"{', '.join(available()) or '(none shipped)'}")


def available(kind: str | None = None) -> list[str]:
    out = []
    for card in sorted(WEIGHTS_DIR.glob("*.json")):
        try:
            arch = json.loads(card.read_text()).get("arch")
        except json.JSONDecodeError:
            continue
        if kind is None or arch == kind:
            out.append(card.stem)
    return out


def read_card(path: str | Path) -> dict:
    card_path = Path(path).with_suffix(".json")
    if not card_path.exists():
        raise WeightsError(f"{card_path}: model card missing (it holds the config and checksum)")
    try:
        return json.loads(card_path.read_text())
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{card_path}: not valid JSON ({exc})") from exc


def load_state(path: str | Path) -> tuple[dict, dict]:
    """(state_dict, card) after checking the checksum; safe loading only."""
    path = resolve(path)
    card = read_card(path)
    if not path.exists():
        raise WeightsError(f"{path}: weights file missing")
    digest = sha256(path)
    if card.get("sha256") != digest:
        raise WeightsError(f"{path}: checksum mismatch (card says {card.get('sha256')}, file is "
                           f"{digest}); the file is damaged or was replaced: restore it")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError and friends: not a plain state_dict
        raise WeightsError(f"{path}: refused: not a plain tensor state_dict loadable with "
                           f"weights_only=True ({type(exc).__name__}); re-export the weights with "
                           "`torch.save(model.state_dict())`") from exc
    return state, card


def pick_for(config: AudioConfig, arch: str) -> str:
    """The shipped weights of ``arch`` trained on ``config`` (all fields but name equal)."""
    for name in available(arch):
        card = read_card(WEIGHTS_DIR / f"{name}.json")
        if not AudioConfig.from_dict(card["audio"]).diff(config):
            return name
    command = {"PInvConvSkip": "invert", "DeGLI": "degli"}.get(arch, arch)
    raise WeightsError(f"no shipped {arch} weights for audio config {config.name!r}; "
                       f"shipped: {', '.join(available(arch)) or 'none'}; "
                       + ("use --method pinv or nnls (no weights needed), or " if command == "invert"
                          else "use --algo fgla, or ")
                       + f"train some with `pipeline train {command}` and pass --weights PATH")
