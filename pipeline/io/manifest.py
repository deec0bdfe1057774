"""Corpus manifests (JSONL, one utterance a line): reading, writing, and making them from
folders and file lists. The corpus recipes that write them are :mod:`pipeline.recipes`.

A manifest line: ``{"id", "path", "sample_rate", "channels", "num_samples", "duration"}``.
The id of a file found in a folder is its path relative to the folder, without extension,
with ``/`` separators (so nested folders keep distinct ids).
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from pipeline.errors import PipelineError
from pipeline.io.audio import AUDIO_EXTENSIONS, AudioError, info
from pipeline.io.results import Failure, claim_file, first_line


class ManifestError(PipelineError, ValueError):
    """A manifest or corpus could not be read; the message names the file."""


@dataclass(frozen=True)
class Utterance:
    id: str
    path: str
    sample_rate: int | None = None
    channels: int | None = None
    num_samples: int | None = None
    duration: float | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


def utterance_id(path: Path, root: Path | None) -> str:
    rel = path.relative_to(root) if root is not None else Path(path.name)
    return rel.with_suffix("").as_posix()


# Audio containers we cannot decode: a file with one of these is an input that fails (with how
# to convert it), not a file to pass over in silence like a README.
UNSUPPORTED_AUDIO = (".m4a", ".aac", ".mp4", ".wma", ".webm", ".amr", ".3gp", ".caf", ".ape",
                     ".wv", ".ac3")


def scan_folder(root: str | Path, extensions: Iterable[str] = AUDIO_EXTENSIONS,
                problems: list[tuple[Path, str]] | None = None,
                exclude: Iterable[str | Path] = ()) -> list[Path]:
    """Audio files below ``root`` (sorted), by extension (case-insensitive).

    ``problems``, when given, receives ``(path, reason)`` for what could not be taken: a
    folder that cannot be listed (permission denied) and audio in a format we cannot read.
    ``exclude``: folders left out of the search (a run's own output inside its input)."""
    root = Path(root)
    exts = {e.lower() for e in extensions}
    skip = {Path(e).resolve() for e in exclude}
    found = []

    def unreadable(err: OSError) -> None:
        if problems is not None:
            why = "permission denied" if isinstance(err, PermissionError) else err.strerror
            problems.append((Path(err.filename), f"{why}: {err.filename} (its files are not read)"))

    for folder, dirs, files in os.walk(root, onerror=unreadable):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and not (skip and (Path(folder) / d).resolve() in skip))
        # a folder named like audio is an input that fails ("is a directory"), and is searched
        for name in [*files, *(d for d in dirs if Path(d).suffix.lower() in exts)]:
            p = Path(folder) / name
            suffix = p.suffix.lower()
            if name.startswith("."):
                continue
            if suffix in exts:
                found.append(p)
            elif problems is not None and suffix in UNSUPPORTED_AUDIO:
                problems.append((p, f"{p}: {suffix} audio cannot be read; convert it first "
                                    f"(ffmpeg -i '{p.name}' '{p.stem}.wav')"))
    return sorted(found)


def describe(path: Path, uid: str) -> tuple[Utterance | None, Failure | None]:
    """Read the header of ``path``; a failure instead of an exception for bad files."""
    try:
        meta = info(path)
    except AudioError as exc:
        return None, Failure(uid, str(path), "manifest", str(exc))
    if meta["num_samples"] == 0:
        return None, Failure(uid, str(path), "manifest", f"{path}: contains no samples")
    # absolute: a store keeps its sources, and is read from other working directories
    return Utterance(uid, os.path.abspath(path), meta["sample_rate"], meta["channels"],
                     meta["num_samples"], round(meta["duration"], 6)), None


def manifest_from_paths(paths: Iterable[str | Path], root: str | Path | None = None
                        ) -> tuple[list[Utterance], list[Failure]]:
    utts: list[Utterance] = []
    fails: list[Failure] = []
    root = Path(root) if root is not None else None
    for p in paths:
        p = Path(p)
        u, f = describe(p, utterance_id(p, root))
        if u is not None:
            utts.append(u)
        elif f is not None:
            fails.append(f)
    dupes = sorted(i for i, n in Counter(u.id for u in utts).items() if n > 1)
    if dupes:
        raise ManifestError(f"duplicate utterance ids {dupes[:5]}: two inputs map to the same id; "
                            "pass a folder (ids are relative paths) or a manifest with unique ids")
    return utts, fails


def manifest_from_folder(root: str | Path, exclude: Iterable[str | Path] = ()
                         ) -> tuple[list[Utterance], list[Failure]]:
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"{root}: not a folder")
    problems: list[tuple[Path, str]] = []
    files = scan_folder(root, problems=problems, exclude=exclude)
    skipped = [Failure(utterance_id(p, root) if p != root else str(p), str(p), "manifest", why)
               for p, why in problems]
    if not files:
        raise ManifestError(f"{root}: no audio files found (looked for {', '.join(AUDIO_EXTENSIONS)})"
                            + (f"; {skipped[0].reason}" if skipped else ""))
    utts, fails = manifest_from_paths(files, root)
    return utts, skipped + fails


def check_id(uid: str) -> str | None:
    """Why ``uid`` cannot name an output file (``<out>/<id>.wav``), or None when it can: no
    absolute path, no ``..`` or empty component, no NUL or backslash."""
    if "\x00" in uid:
        return "contains a NUL character"
    if "\\" in uid:
        return "contains a backslash"
    if uid.startswith("/") or (len(uid) > 1 and uid[1] == ":"):
        return "is an absolute path"
    parts = uid.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "has an empty, '.' or '..' path component"
    return None


def read_manifest(path: str | Path) -> list[Utterance]:
    """Read a JSONL manifest. Relative paths are resolved against the manifest's folder."""
    path = Path(path)
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read manifest ({exc})") from exc
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            u = Utterance(**{k: d.get(k) for k in Utterance.__dataclass_fields__})
        except (json.JSONDecodeError, TypeError) as exc:
            raise ManifestError(f"{path}:{n}: not a manifest line ({exc})") from exc
        if not u.id or not u.path:
            raise ManifestError(f"{path}:{n}: each line needs 'id' and 'path'")
        why = check_id(str(u.id))
        if why:
            raise ManifestError(f"{path}:{n}: id {u.id!r} {why}; ids become file names under "
                                "--out, so they must be relative paths inside it")
        if not os.path.isabs(u.path):
            u = Utterance(**{**asdict(u), "path": str((path.parent / u.path).resolve())})
        out.append(u)
    ids = [u.id for u in out]
    if len(set(ids)) != len(ids):
        raise ManifestError(f"{path}: utterance ids are not unique")
    return out


def is_manifest(path: Path) -> bool:
    """Whether ``path`` reads as a manifest this tool wrote (empty, or a first line that is a
    JSON object with ``id`` and ``path``): :func:`write_manifest` replaces nothing else."""
    line = first_line(path)
    if not line:
        return path.stat().st_size == 0
    try:
        d = json.loads(line)
    except ValueError:
        return False
    return isinstance(d, dict) and "id" in d and "path" in d


def write_manifest(utts: Iterable[Utterance], path: str | Path,
                   inputs: Iterable[str | Path] = ()) -> Path:
    """Write a JSONL manifest atomically; refuse a path that is one of ``inputs`` or an
    existing file that is not a manifest (:func:`pipeline.io.results.claim_file`)."""
    path = claim_file(path, list(inputs), is_manifest, "manifest")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(u.to_json() + "\n" for u in utts), encoding="utf-8")
    os.replace(tmp, path)
    return path


def resolve_inputs(inputs: list[str | Path], exclude: Iterable[str | Path] = ()
                   ) -> tuple[list[Utterance], list[Failure]]:
    """A folder, a ``.jsonl`` manifest, or audio files -> utterances (+ header failures).
    ``exclude``: folders a folder's search leaves out."""
    if not inputs:
        raise ManifestError("no input given: pass a folder, a .jsonl manifest, or audio files")
    if len(inputs) == 1:
        p = Path(inputs[0])
        if p.is_dir():
            return manifest_from_folder(p, exclude)
        if p.suffix == ".jsonl":
            return read_manifest(p), []
        if not p.exists():
            raise ManifestError(f"{p}: no such file or folder")
    return manifest_from_paths(inputs)
