"""What a stage returns, and the failures CSV it leaves beside its output."""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pipeline.errors import PipelineError
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


RUN_FILE = ".pipeline-run.json"


def claim_output(folder: str | Path, record: dict, outputs: list[Path], overwrite: bool = False
                 ) -> None:
    """Make ``folder`` the output of the run ``record`` describes (its input and every setting
    that changes the result), so that a resume never keeps outputs of other settings.

    - ``overwrite``: the files this run writes (``outputs``), its failures CSV and its record
      are removed first; nothing else in the folder is touched.
    - a record of another run: refused, naming the settings that differ.
    - outputs present without a record (an older version's or someone else's): refused.
    Raises :class:`OutputError`; the CLI prints it in one line."""
    import json
    import os

    folder = Path(folder)
    path = folder / RUN_FILE
    if overwrite:
        for p in [*outputs, folder / "failures.csv", path]:
            p.unlink(missing_ok=True)
    elif path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = {}
        if old != record:
            keys = sorted(set(old) | set(record))
            diff = [f"{k}: {old.get(k)!r} -> {record.get(k)!r}" for k in keys
                    if old.get(k) != record.get(k)]
            raise OutputError(f"{folder} holds the output of another run ({'; '.join(diff[:4])}); "
                              "resume with the same settings, pass --overwrite to replace those "
                              "files, or choose another --out")
    elif any(p.exists() for p in outputs):
        raise OutputError(f"{folder} already holds outputs with these names but no record of the "
                          "run that made them; pass --overwrite to replace them, or choose "
                          "another --out")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    os.replace(tmp, path)


@dataclass
class StageResult:
    """What a stage did; the CLI prints it and exits non-zero when ``failures`` is not empty."""
    store: Path
    done: int = 0
    skipped_shards: int = 0
    failures: list[Failure] = field(default_factory=list)
    failures_csv: Path | None = None
    seconds: float = 0.0
    audio_seconds: float = 0.0

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


def write_failures(failures: list[Failure], path: Path) -> Path | None:
    """Failures CSV beside the store (removed when a re-run has none left)."""
    if not failures:
        path.unlink(missing_ok=True)
        return None
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "path", "stage", "reason"])
        for f in failures:
            w.writerow([f.id, f.path, f.stage, f.reason])
    return path


def task_failure(what: str, items: list[dict], stage: str, error: str) -> list[Failure]:
    return [Failure(it["id"], it["path"], stage, f"{what} failed: {error}")
            for it in items]


