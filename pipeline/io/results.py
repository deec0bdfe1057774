"""What a stage returns, and the failures CSV it leaves beside its output."""
from __future__ import annotations

import contextlib
import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TextIO

from pipeline.errors import PipelineError
from pipeline.io.audio import AUDIO_EXTENSIONS
from pipeline.io.store import shard_name


@dataclass(frozen=True)
class Failure:
    """An item that was skipped, with the reason a person can act on."""
    id: str
    path: str
    stage: str
    reason: str


class OutputError(PipelineError, OSError):
    """The output location cannot be written; raised before any work."""


def check_writable(folder: str | Path) -> None:
    """Create ``folder`` if needed and prove a file can be written there, so that a read-only
    location fails in one line before the work, not in a traceback after it."""
    import tempfile

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        reason = "permission denied" if isinstance(exc, PermissionError) else exc.strerror or exc
        raise OutputError(f"cannot write to {folder}: {reason}; choose another output location"
                          ) from None


@contextlib.contextmanager
def atomic_open(path: Path) -> Iterator[TextIO]:
    """A text file written whole or not at all: into ``PATH.tmp``, renamed over ``path`` when
    the block ends, removed when it raises (a crash or a full disk never leaves half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


RUN_FILE = ".pipeline-run.json"
# beside a run's outputs, written by this tool (removed with them by --overwrite)
REPORTS = ("failures.csv", "phase-report.csv", "vocode-report.csv", "wav.scp", "manifest.jsonl")


def _inside(path: Path, folder: Path) -> bool:
    return folder == path or folder in path.parents


def refuse_sources_inside(folder: str | Path, sources: list[str], what: str) -> None:
    """Refuse an output folder that holds any of ``sources`` (the recordings a store was
    extracted from): writing ``<id>.wav`` there would replace them. Raises :class:`OutputError`."""
    here = Path(folder).resolve()
    for s in sources:
        src = Path(s).resolve()
        if _inside(src, here):
            raise OutputError(f"--out {folder} holds the source audio of {what} ({s}): its "
                              "reconstructions would replace the recordings; choose another --out")


def claim_output(folder: str | Path, record: dict, outputs: list[Path], overwrite: bool = False,
                 sources: Sequence[str] = ()) -> None:
    """Make ``folder`` the output of the run ``record`` describes (its input and every setting
    that changes the result), so that a resume never keeps outputs of other settings.

    - ``sources``: input files; a folder holding any of them is refused, ``overwrite`` or not.
    - ``overwrite``: the files this run writes (``outputs``), its failures CSV and its record
      are removed first, and only when the folder's record says this tool wrote them; nothing
      else in the folder is touched.
    - a record of another run: refused, naming the settings that differ.
    - outputs present without a record (files this tool did not write): refused, ``overwrite``
      or not.
    Raises :class:`OutputError`; the CLI prints it in one line."""
    import json

    folder = Path(folder)
    path = folder / RUN_FILE
    refuse_sources_inside(folder, list(sources), record.get("store") or record.get("source") or "the input")
    if not path.exists():
        clash = [p for p in outputs if p.exists()]
        if clash:
            raise OutputError(f"{folder} already holds files with the names this run writes "
                              f"({clash[0].name}{', ...' if len(clash) > 1 else ''}) that this "
                              "tool did not write (no run record): choose another --out, or move "
                              "them away yourself")
    elif overwrite:
        for p in [*outputs, *(folder / r for r in REPORTS), path]:
            p.unlink(missing_ok=True)
    else:
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = {}
        if old != record:
            raise OutputError(f"{folder} holds the output of another run ({record_diff(old, record)}); "
                              "resume with the same settings, pass --overwrite to replace those "
                              "files, or choose another --out")
    with atomic_open(path) as fh:
        fh.write(json.dumps(record, indent=1, sort_keys=True))


def record_diff(old: dict, new: dict, limit: int = 4) -> str:
    """The settings that differ between two run records, innermost field first
    (``options.momentum: 0.99 -> 0.9``), never two whole dicts."""
    diffs: list[str] = []

    def walk(a, b, prefix: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b), key=str):
                walk(a.get(k), b.get(k), f"{prefix}{k}.")
        elif a != b:
            diffs.append(f"{prefix[:-1]}: {_short(a)} -> {_short(b)}")

    walk(old, new, "")
    return "; ".join(diffs[:limit]) + ("; ..." if len(diffs) > limit else "")


def _short(v) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def claim_file(path: str | Path, inputs: list[str | Path], ours: Callable[[Path], bool],
               what: str) -> Path:
    """Check that the single file ``path`` may be written: it is none of ``inputs`` (files, or
    folders whose files it would be), and if it exists, ``ours(path)`` says this tool wrote
    it (a report, a manifest, a plot). Raises :class:`OutputError` naming the file."""
    path = Path(path)
    here = path.resolve()
    for i in inputs:
        src = Path(i).resolve()
        if src == here or (src.is_dir() and _inside(here, src) and here.suffix.lower() in AUDIO_EXTENSIONS):
            raise OutputError(f"{path} is one of the inputs ({i}): writing the {what} there would "
                              "replace it; choose another --out")
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name for the {what}")
    if path.exists() and not ours(path):
        raise OutputError(f"{path} exists and is not a {what} written by pipeline: it is left "
                          "as it is; choose another --out, or move it away yourself")
    return path


def first_line(path: Path, limit: int = 4096) -> str:
    """The first line of a file as text ('' when it is not text)."""
    try:
        with path.open("rb") as fh:
            return fh.read(limit).split(b"\n", 1)[0].decode("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""


def is_csv_with(columns: list[str]) -> Callable[[Path], bool]:
    """``ours`` for :func:`claim_file`: a CSV whose header starts with ``columns``."""
    head = ",".join(columns)
    return lambda p: first_line(p).startswith(head)


def is_png(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(8) == b"\x89PNG\r\n\x1a\n"
    except OSError:
        return False


@dataclass
class StageResult:
    """What a stage did; the CLI prints it and exits non-zero when ``failures`` is not empty.
    Stages that write audio also list, per item, the level it was written at (``report``:
    the CSV, ``clipped``: the ids that clipped)."""
    store: Path
    done: int = 0
    skipped_shards: int = 0
    failures: list[Failure] = field(default_factory=list)
    failures_csv: Path | None = None
    seconds: float = 0.0
    audio_seconds: float = 0.0
    report: Path | None = None
    clipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def absorb(self, results, items_of, stage: str,
               label: Callable[[Any], str] | None = None) -> list[Failure]:
        """Count the finished shard tasks; a crashed task becomes one failure per item.

        ``items_of(key)``: the ``{"id", "path"}`` items of the task; ``label(key)``: how the
        failure names the task (default: the key is a shard's index, "shard 00003").
        """
        crashed: list[Failure] = []
        for r in results:
            if r.error:
                what = label(r.key) if label else f"shard {shard_name(int(r.key))}"
                crashed += task_failure(what, items_of(r.key), stage, r.error)
            else:
                self.done += r.value["n"]
                self.audio_seconds += r.value["seconds"]
        return crashed


def write_report(path: Path, rows: list[dict], ids: list[str],
                 missing: Callable[[str], dict | None]) -> tuple[Path | None, list[dict]]:
    """The per-item report of a run's outputs ``ids``: this run's ``rows``, then the rows an
    earlier (interrupted) run of the same folder wrote for the others, then ``missing(id)``
    for outputs no row describes (None: no output). Written atomically, sorted by id."""
    have: dict[str, dict] = {r["id"]: r for r in rows}
    if path.exists():
        with path.open(newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                have.setdefault(r["id"], r)
    out = []
    for i in sorted(ids):
        row = have.get(i) or missing(i)
        if row is not None:
            out.append(row)
    if not out:
        path.unlink(missing_ok=True)
        return None, []
    with atomic_open(path) as fh:
        # every column any row has (an earlier run's rows may lack a newer one)
        fields = list(dict.fromkeys(k for row in out for k in row))
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(out)
    return path, out


def write_failures(failures: list[Failure], path: Path) -> Path | None:
    """Failures CSV beside the store (removed when a re-run has none left)."""
    if not failures:
        path.unlink(missing_ok=True)
        return None
    with atomic_open(path) as fh:
        w = csv.writer(fh)
        w.writerow(["id", "path", "stage", "reason"])
        for f in failures:
            w.writerow([f.id, f.path, f.stage, f.reason])
    return path


def task_failure(what: str, items: list[dict], stage: str, error: str) -> list[Failure]:
    return [Failure(it["id"], it["path"], stage, f"{what} failed: {error}")
            for it in items]


