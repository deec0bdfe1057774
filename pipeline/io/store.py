"""The zarr (v3) store one corpus run lives in.

Layout::

    STORE.zarr/
      attrs    schema_version, pipeline_version, audio (AudioConfig), source, n_shards,
               created/updated
      plan/    attrs shards: [[{id, path}, ...], ...]  the shard plan (every utterance), kept
               apart so that opening the store (each worker task does) reads none of it
      shards/00000/            one group per shard, written by exactly one worker
          mel       float32 [frames, n_mels]   utterances' frames concatenated
          mag_true  float32 [frames, n_freq]   true STFT magnitude (extract --with-mag)
          mag       float32 [frames, n_freq]   estimated magnitude (invert)
          attrs     utterances: [{id, offset, n_frames, n_samples, source}], failures: [...],
                    extract: {complete: true} (written last by extract),
                    mag: {complete, method, weights, ...} (written by invert)

Each shard has its own arrays, so no two workers ever touch the same chunk, and a shard is
complete only once its marker is written: a re-run redoes exactly the shards without one.
Every stage's marker is a dict with ``complete`` (stores of version 0.1 marked extraction
with ``complete: true``; they are read the same). ``Store(path)`` opens read-only; writers
open with ``mode="r+"``.
"""
from __future__ import annotations

import datetime as _dt
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence, cast

import numpy as np
import zarr

from pipeline import SCHEMA_VERSION, __version__
from pipeline.config import AudioConfig, ConfigError
from pipeline.errors import PipelineError

CHUNK_FRAMES = 4096
STORE_ENTRIES = {"zarr.json", "plan", "shards"}   # all a store holds at its top level


class StoreError(PipelineError, RuntimeError):
    """The store is missing, damaged, or does not fit the request; the message says what to do."""


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def shard_name(i: int) -> str:
    return f"{i:05d}"


@dataclass(frozen=True)
class Entry:
    """Where one utterance lives in the store."""
    id: str
    shard: str
    offset: int
    n_frames: int
    n_samples: int
    source: str


class Store:
    """A handle on ``STORE.zarr``. Cheap to create; reads attributes lazily."""

    def __init__(self, path: str | Path, mode: str = "r"):
        if mode not in ("r", "r+", "w"):
            raise ValueError(f"Store mode must be r, r+ or w, not {mode!r}")
        self.path, self.mode = Path(path), mode
        if mode != "w" and not (self.path / "zarr.json").is_file():
            raise StoreError(f"{self.path}: not a pipeline store (no zarr.json); "
                             "create one with `pipeline extract INPUT --out STORE.zarr`")
        try:
            self.root = zarr.open_group(str(self.path), mode=mode, zarr_format=3)  # type: ignore[arg-type]
        except Exception as exc:  # zarr raises several types for damaged metadata
            raise StoreError(f"{self.path}: cannot open zarr store ({exc})") from exc
        if mode != "w" and "schema_version" not in self.root.attrs:
            raise StoreError(f"{self.path}: a zarr store, but not one written by pipeline extract")

    # ----------------------------------------------------------------- creation

    @staticmethod
    def check_replaceable(path: str | Path, inputs: Sequence[str | Path] = ()) -> None:
        """Refuse to replace ``path`` unless it is absent, an empty folder, or a store this
        tool created holding nothing else (``zarr.json`` with our schema, ``shards/``), and
        never when an input lies inside it (``extract c4 --out c4 --overwrite`` deleted the
        input audio)."""
        path = Path(path)
        if not path.exists():
            return
        here = path.resolve()
        for i in inputs:
            src = Path(i).resolve()
            if src == here or here in src.parents:
                raise StoreError(f"--out {path} holds the input {i}: --overwrite would delete "
                                 "it; choose another --out")
        if not path.is_dir():
            raise StoreError(f"--out {path} is a file, not a store: choose another --out")
        names = {p.name for p in path.iterdir()}
        if not names:
            return
        ours = False
        if "zarr.json" in names:
            try:
                ours = "schema_version" in zarr.open_group(str(path), mode="r", zarr_format=3).attrs
            except Exception:   # damaged or foreign metadata: not ours
                ours = False
        if not ours or not names <= STORE_ENTRIES:
            extra = sorted(names - STORE_ENTRIES)
            what = f"holds other files ({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''})" \
                if ours else "is not a store made by `pipeline extract`"
            raise StoreError(f"--out {path} {what}: --overwrite only replaces a store this tool "
                             "created; choose another --out or remove it yourself")

    @classmethod
    def create(cls, path: str | Path, config: AudioConfig, plan: list[list[dict]],
               source: str) -> "Store":
        path = Path(path)
        root = zarr.open_group(str(path), mode="w", zarr_format=3)
        root.attrs.update({
            "schema_version": SCHEMA_VERSION, "pipeline_version": __version__,
            "audio": config.to_dict(), "source": source, "n_shards": len(plan),
            "created": now(), "updated": now(),
        })
        root.create_group("plan").attrs["shards"] = plan
        root.create_group("shards")
        return cls(path, "r+")

    # ----------------------------------------------------------------- metadata

    @property
    def config(self) -> AudioConfig:
        return AudioConfig.from_dict(dict(cast(dict, self.root.attrs["audio"])))

    @property
    def plan(self) -> list[list[dict]]:
        """Every shard's ``{id, path}`` items (read from the store each time: the CLI process
        needs it to plan; workers never do). Stores of schema 1 kept it in the root's attrs."""
        if "plan" in self.root.attrs:
            return list(cast(list, self.root.attrs["plan"]))
        return list(cast(list, self.root["plan"].attrs["shards"]))

    def check_config(self, config: AudioConfig, what: str) -> None:
        """Refuse to mix conventions: raise naming every differing field."""
        diff = self.config.diff(config)
        if diff:
            raise ConfigError(f"{self.path} was made with a different audio config than {what}: "
                              + "; ".join(diff))

    def touch(self) -> None:
        self.root.attrs["updated"] = now()

    # ----------------------------------------------------------------- shards

    def shard_names(self) -> list[str]:
        n = self.root.attrs.get("n_shards")        # absent in stores of schema 1
        count = int(cast(int, n)) if n is not None else len(self.plan)
        return [shard_name(i) for i in range(count)]

    def shard_group(self, name: str) -> zarr.Group | None:
        try:
            return zarr.open_group(str(self.path / "shards" / name),
                                   mode="r" if self.mode == "r" else "r+", zarr_format=3)
        except Exception:  # missing or damaged shard metadata: treated as not written
            return None

    def shard_attrs(self, name: str) -> dict[str, Any]:
        g = self.shard_group(name)
        return dict(g.attrs) if g is not None else {}

    def is_complete(self, name: str, stage: str = "extract") -> bool:
        """Whether ``stage`` (``extract`` or ``mag``) finished shard ``name``."""
        attrs = self.shard_attrs(name)
        if stage == "extract" and attrs.get("complete") is True:   # stores of version 0.1
            return True
        value = attrs.get(stage)
        return isinstance(value, dict) and value.get("complete") is True

    def reset_shard(self, name: str) -> zarr.Group:
        """Delete whatever a crashed writer left of a shard and start it afresh."""
        shard_dir = self.path / "shards" / name
        if shard_dir.exists():
            shutil.rmtree(shard_dir)
        return zarr.open_group(str(shard_dir), mode="w", zarr_format=3)

    def write_array(self, group: zarr.Group, name: str, data: np.ndarray,
                    dtype: str = "float32") -> None:
        chunks = (min(CHUNK_FRAMES, max(1, data.shape[0])), data.shape[1])
        # every chunk on disk, all-zero ones too: a chunk file missing is then damage
        # (:meth:`damage`), never a stretch of zeros
        arr = group.create_array(name, shape=data.shape, chunks=chunks, dtype=dtype,
                                 overwrite=True, fill_value=0.0,
                                 config={"write_empty_chunks": True})
        if data.size:
            arr[...] = data

    def _damaged(self, name: str, array: str, why: str) -> StoreError:
        return StoreError(f"{self.path}: shard {name}/{array} is damaged ({why}); delete "
                          f"{self.path / 'shards' / name} and re-run the stage that wrote it")

    def _open_array(self, g: zarr.Group, name: str, array: str) -> zarr.Array:
        """The array, checked whole: a chunk file missing would read as zeros (zarr's fill
        value), which phase turns into full-scale noise, so it is damage like a bad chunk."""
        try:
            arr = cast(zarr.Array, g[array])
            have, want = arr.nchunks_initialized, arr.nchunks
        except Exception as exc:  # zarr raises several types for damaged metadata
            raise self._damaged(name, array, str(exc)) from exc
        if have < want:
            raise self._damaged(name, array, f"{want - have} of {want} chunk file(s) missing")
        return arr

    def damage(self, name: str, arrays: Sequence[str] = ("mel", "mag_true", "mag")) -> str | None:
        """What is wrong with the arrays of shard ``name`` that it holds (None: intact)."""
        g = self.shard_group(name)
        if g is None:
            return f"{self.path}: shard {name} is missing or its metadata is damaged"
        for a in arrays:
            if a in g:
                try:
                    self._open_array(g, name, a)
                except StoreError as exc:
                    return str(exc)
        return None

    def read_array(self, name: str, array: str, rows: slice = slice(None)) -> np.ndarray:
        g = self.shard_group(name)
        if g is None or array not in g:
            hint = {"mel": "run `pipeline extract` again",
                    "mag_true": "extract with --with-mag",
                    "mag": "run `pipeline invert` first"}.get(array, "")
            raise StoreError(f"{self.path}: shard {name} has no '{array}' array; {hint}")
        arr = self._open_array(g, name, array)
        try:
            return np.asarray(arr[rows])
        except Exception as exc:
            raise self._damaged(name, array, str(exc)) from exc

    def entries(self, name: str) -> list[Entry]:
        return [Entry(shard=name, **u) for u in self.shard_attrs(name).get("utterances", [])]

    def all_entries(self) -> list[Entry]:
        return [e for s in self.shard_names() for e in self.entries(s)]

    def failures(self) -> list[dict]:
        return [f for s in self.shard_names() for f in self.shard_attrs(s).get("failures", [])]

    def incomplete(self, stage: str = "extract") -> list[str]:
        return [s for s in self.shard_names() if not self.is_complete(s, stage)]

    def iter_utterances(self, array: str) -> Iterator[tuple[Entry, np.ndarray]]:
        """(entry, frames ``[n_frames, dim]``) for every utterance, shard by shard."""
        for s in self.shard_names():
            data = self.read_array(s, array)
            for e in self.entries(s):
                yield e, data[e.offset:e.offset + e.n_frames]


def summary(store: Store) -> dict[str, Any]:
    """What ``pipeline info`` prints: config, utterances, shards complete per stage (every
    chunk of a complete shard checked present), damaged shards and why, failures recorded per
    stage (with the CSV that lists them)."""
    entries, cfg, names = store.all_entries(), store.config, store.shard_names()
    failures = {}
    for stage in ("extract", "invert"):   # every failure a run recorded, header failures too
        path = failures_csv_path(store.path, "" if stage == "extract" else stage)
        n = max(0, sum(1 for _ in path.open(encoding="utf-8")) - 1) if path.exists() else 0
        failures[stage] = (n, path)
    damaged = {n: why for n in names if (why := store.damage(n)) is not None}
    ok = [n for n in names if n not in damaged]
    return {"path": store.path, "config": cfg, "utterances": len(entries),
            "seconds": sum(e.n_samples for e in entries) / cfg.sample_rate, "shards": len(names),
            "complete": {"extract": sum(store.is_complete(n) for n in ok),
                         "invert": sum(store.is_complete(n, "mag") for n in ok)},
            "damaged": damaged, "failures": failures}


def store_items(store: Store, shard: str) -> list[dict]:
    """The ``{"id", "path"}`` items of a shard (for failure reports)."""
    return [{"id": e.id, "path": e.source} for e in store.entries(shard)]


def failures_csv_path(store: str | Path, stage: str = "") -> Path:
    """``corpus.zarr`` -> ``corpus.failures.csv`` (or ``corpus.phase-failures.csv``) beside it."""
    store = Path(store)
    stem = store.name[:-5] if store.name.endswith(".zarr") else store.name
    name = f"{stem}.{stage + '-' if stage else ''}failures.csv"
    return store.with_name(name)
