"""What the corpus recipes share: Debian packages as the data's source, G.722 decoding, the
deterministic train/val split and the manifests a recipe ends with."""
from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.io.audio import AudioError
from pipeline.io.manifest import ManifestError, Utterance, write_manifest
from pipeline.io.results import Failure, write_failures


@dataclass
class Prepared:
    """What a recipe wrote: its manifests by name (``train``, ``val``, ...) and the items it
    could not take, also listed in ``failures_csv`` (None when there are none)."""
    manifests: dict[str, Path]
    failures: list[Failure] = field(default_factory=list)
    failures_csv: Path | None = None


def need(path: Path, package: str) -> None:
    """Refuse, naming the Debian package to install, a data folder that is not there."""
    if not path.is_dir():
        raise ManifestError(f"{path} not found: install the Debian package with "
                            f"`apt-get install {package}` (or `make setup`)")


def decode_g722(src: Path, dst: Path) -> None:
    """``ffmpeg`` a G.722 file to 16 kHz mono wav, atomically; a decoded ``dst`` is kept."""
    if dst.exists() and dst.stat().st_size > 44:
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name("." + dst.name + ".tmp.wav")
    proc = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "g722",
                           "-i", str(src), "-ac", "1", "-ar", "16000", str(tmp)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise AudioError(f"{src}: ffmpeg could not decode G.722: {proc.stderr.strip()[-300:]}")
    os.replace(tmp, dst)


def split_of(uid: str, val_fraction: float) -> str:
    """Deterministic train/val assignment from a hash of the id."""
    h = int(hashlib.sha1(uid.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if h < val_fraction else "train"


def write_splits(utts: list[Utterance], out_dir: Path, corpus: str, val_fraction: float,
                 min_duration: float) -> dict[str, Path]:
    """Utterances of at least ``min_duration`` s split by ``split_of`` into
    ``out_dir/<corpus>-train.jsonl`` and ``<corpus>-val.jsonl``."""
    splits: dict[str, list[Utterance]] = {"train": [], "val": []}
    for u in utts:
        if (u.duration or 0) >= min_duration:
            splits[split_of(u.id, val_fraction)].append(u)
    return {name: write_manifest(us, out_dir / f"{corpus}-{name}.jsonl") for name, us in splits.items()}


def finish(utts: list[Utterance], fails: list[Failure], out_dir: Path, corpus: str,
           val_fraction: float, min_duration: float) -> Prepared:
    """A recipe's end: the train/val manifests, and its failures in
    ``out_dir/<corpus>-failures.csv`` (removed when a re-run has none)."""
    manifests = write_splits(utts, out_dir, corpus, val_fraction, min_duration)
    return Prepared(manifests, fails, write_failures(fails, out_dir / f"{corpus}-failures.csv"))
