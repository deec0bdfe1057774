"""What a stage returns, and the failures CSV it leaves beside its output."""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .manifest import Failure
from .store import shard_name


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


