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
from pipeline.io.results import Failure, atomic_open, claim_file, first_line


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
    # two inputs with one id (x.wav and x.flac in a folder; same-named files given one by one)
    # would write one <id>.wav: each of them fails, in words, and the others go on
    dupes = {i for i, n in Counter(u.id for u in utts).items() if n > 1}
    for u in utts:
        if u.id in dupes:
            others = [v.path for v in utts if v.id == u.id and v.path != u.path]
            fix = ("rename one" if root is not None else
                   "pass their folder (ids are then relative paths) or rename one")
            fails.append(Failure(u.id, u.path, "manifest", f"{u.path}: id {u.id!r} is also the "
                                 f"id of {', '.join(others)}; both would write {u.id}.wav: {fix}"))
    return [u for u in utts if u.id not in dupes], fails


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
    with atomic_open(path) as fh:
        fh.write("".join(u.to_json() + "\n" for u in utts))
    return path


def listed_path(value: str, listing: Path, above: bool = True) -> Path | None:
    """A path named in a list file (a Kaldi/ESPnet scp): as written (relative to where the
    recipe ran), else relative to the list's folder or (``above``) one above it (ESPnet
    writes feature paths relative to the recipe's directory, above ``dump/``); None when
    none exists."""
    p = Path(value)
    if p.is_absolute() or p.exists():
        return p
    bases = (listing.parent, *listing.parent.parents) if above else (listing.parent,)
    return next((base / p for base in bases if (base / p).exists()), None)


def read_wav_scp(scp: str | Path) -> list[Utterance]:
    """A Kaldi ``wav.scp`` (``id path`` a line; with a Kaldi ``segments`` file beside it,
    ``seg_id rec_id start end`` lines become the utterances) -> utterances. Piped commands
    (``id sox ... |``) are refused, with what to do. Items that cannot be read are left out
    here; :func:`resolve_inputs` reports them."""
    return _wav_scp(Path(scp))[0]


def _wav_scp(scp: Path) -> tuple[list[Utterance], list[Failure]]:
    from pipeline.io.audio import segment_source

    recs: dict[str, Path] = {}
    for n, line in enumerate(scp.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        uid, _, value = line.strip().partition(" ")
        value = value.strip()
        if value.endswith("|"):
            raise ManifestError(f"{scp}:{n}: {uid} is a piped command ({value[:60]}); write "
                                "the audio to files first (e.g. run the command into "
                                f"{uid}.wav) and list the files")
        if not value:
            raise ManifestError(f"{scp}:{n}: a wav.scp line is 'id path' (got {line!r})")
        # missing: described (and reported) as such
        recs[uid] = listed_path(value, scp, above=False) or scp.parent / value
    items: list[tuple[str, Path]] = [(uid, p) for uid, p in recs.items()]
    segments = scp.with_name("segments")
    if segments.is_file():
        items = []
        for n, line in enumerate(segments.read_text(encoding="utf-8").splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 4 or parts[1] not in recs:
                raise ManifestError(f"{segments}:{n}: a segments line is 'seg_id rec_id start "
                                    f"end' with rec_id in {scp.name} (got {line!r})")
            items.append((parts[0], Path(segment_source(recs[parts[1]], float(parts[2]),
                                                        float(parts[3])))))
    return describe_all(items)


def describe_all(items: Iterable[tuple[str, Path]]) -> tuple[list[Utterance], list[Failure]]:
    """``(id, path)`` pairs -> utterances, and failures for ids that cannot name an output
    file (:func:`check_id`) or files that cannot be read."""
    utts, fails = [], []
    for uid, p in items:
        why = check_id(uid)
        if why:
            fails.append(Failure(uid, str(p), "manifest", f"id {uid!r} {why}; ids become file "
                                 "names under --out"))
            continue
        u, f = describe(p, uid)
        utts.append(u) if u is not None else fails.append(f)  # type: ignore[arg-type]
    return utts, fails


def is_lhotse(path: Path) -> bool:
    """A lhotse manifest (``.jsonl.gz``, or ``.jsonl`` whose lines have no ``path``)."""
    if path.name.endswith(".jsonl.gz"):
        return True
    if path.suffix != ".jsonl":
        return False
    try:
        first = json.loads(first_line(path) or "{}")
    except ValueError:
        return False
    return isinstance(first, dict) and "path" not in first and (
        "sources" in first or "recording" in first or "recording_id" in first)


def read_lhotse(path: str | Path) -> tuple[list[Utterance], list[Failure]]:
    """A lhotse RecordingSet or CutSet manifest, read by lhotse itself -> utterances: a
    recording each; a cut's supervision segments each where it has them, else the cut.
    Recordings that are not files (URLs, commands, in-memory) fail, in words."""
    from pipeline.io.audio import segment_source

    try:
        from lhotse import CutSet, RecordingSet, load_manifest
    except ImportError:
        raise ManifestError(f"{path} is a lhotse manifest: reading it needs lhotse "
                            "(pip install 'pipeline[lhotse]')") from None
    manifest = load_manifest(path)
    spans: list[tuple[str, object, float | None, float | None]] = []  # id, recording, start, end
    if isinstance(manifest, RecordingSet):
        spans = [(r.id, r, None, None) for r in manifest]
    elif isinstance(manifest, CutSet):
        for cut in manifest:
            rec = getattr(cut, "recording", None)
            sups = list(getattr(cut, "supervisions", []) or [])
            if sups:
                spans += [(s.id, rec, cut.start + max(0.0, s.start),
                           cut.start + min(cut.duration, s.start + s.duration)) for s in sups]
            else:
                spans.append((cut.id, rec, cut.start, cut.start + cut.duration))
    else:
        raise ManifestError(f"{path}: a lhotse {type(manifest).__name__}; give a RecordingSet "
                            "or a CutSet (supervisions need their recordings)")
    fails, found = [], []
    for uid, rec, start, end in spans:
        sources = list(getattr(rec, "sources", []) or [])
        if rec is None or len(sources) != 1 or sources[0].type != "file":
            kinds = ", ".join(sorted({s.type for s in sources})) or "no source"
            fails.append(Failure(uid, str(path), "manifest", f"{path}: {uid}'s audio is not one "
                                 f"file ({kinds}); save it to a file first"))
            continue
        src = Path(sources[0].source)
        whole = start is None or (start <= 0 and end is not None
                                  and abs(end - rec.duration) < 1e-6)   # type: ignore[attr-defined]
        found.append((uid, src if whole else Path(segment_source(src, start or 0.0, end or 0.0))))
    utts, bad = describe_all(found)
    return utts, fails + bad


def write_output_lists(folder: Path, outputs: list[tuple[str, Path]]) -> tuple[Path, Path]:
    """Beside a run's outputs: ``wav.scp`` (Kaldi: ``id path`` a line, so the folder reads
    as a Kaldi data directory, e.g. for lhotse's ``load_kaldi_data_dir``) and
    ``manifest.jsonl`` (this module's format: id, path, sample rate, channels, samples,
    duration), for the ``(id, path)`` outputs that exist; both written atomically."""
    utts = [u for uid, p in outputs if p.exists() for u in [describe(p, uid)[0]] if u is not None]
    scp = folder / "wav.scp"
    with atomic_open(scp) as fh:
        fh.write("".join(f"{u.id} {u.path}\n" for u in utts))
    return scp, write_manifest(utts, folder / "manifest.jsonl")


def resolve_inputs(inputs: list[str | Path], exclude: Iterable[str | Path] = ()
                   ) -> tuple[list[Utterance], list[Failure]]:
    """A folder, a ``.jsonl`` manifest, a Kaldi ``wav.scp`` (with its ``segments``), a lhotse
    RecordingSet / CutSet, or audio files -> utterances (+ the items that failed).
    ``exclude``: folders a folder's search leaves out."""
    if not inputs:
        raise ManifestError("no input given: pass a folder, a .jsonl manifest, or audio files")
    if len(inputs) == 1:
        p = Path(inputs[0])
        if p.is_dir():
            return manifest_from_folder(p, exclude)
        if p.is_file() and is_lhotse(p):
            return read_lhotse(p)
        if p.suffix == ".jsonl":
            return read_manifest(p), []
        if p.suffix == ".scp":
            return _wav_scp(p)
        if not p.exists():
            raise ManifestError(f"{p}: no such file or folder")
    return manifest_from_paths(inputs)
