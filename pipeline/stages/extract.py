"""Stage 1: audio corpus -> mel spectrograms (and optionally true magnitudes) in a zarr store."""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence, cast

import numpy as np
import torch

from pipeline.config import AudioConfig
from pipeline.dsp.mel import utterance_features
from pipeline.io.audio import AudioError, load
from pipeline.io.manifest import Utterance, resolve_inputs
from pipeline.io.results import Failure, StageResult, check_writable
from pipeline.io.store import Store, StoreError, failures_csv_path, shard_name
from pipeline.parallel.tasks import threads_per_worker
from pipeline.stages._runner import run_stage

DEFAULT_SHARD_SECONDS = 60.0


def plan_shards(utts: list[Utterance], shard_seconds: float = DEFAULT_SHARD_SECONDS,
                max_items: int = 256) -> list[list[dict]]:
    """Group utterances into shards of similar length (length bucketing), ~shard_seconds each.

    Sorted by duration (then id) so a shard pads little; deterministic for a given manifest.
    """
    order = sorted(utts, key=lambda u: (u.duration or 0.0, u.id))
    shards: list[list[dict]] = []
    cur: list[dict] = []
    cur_s = 0.0
    for u in order:
        if cur and (cur_s + (u.duration or 0.0) > shard_seconds or len(cur) >= max_items):
            shards.append(cur)
            cur, cur_s = [], 0.0
        cur.append({"id": u.id, "path": u.path})
        cur_s += u.duration or 0.0
    if cur:
        shards.append(cur)
    return shards


def plan_difference(store: Store, plan: list[list[dict]], shard_seconds: float) -> str:
    """How the store's plan of shards differs from this run's, in the user's terms: another
    --shard-seconds, or which utterances are new or gone."""
    was = store.root.attrs.get("shard_seconds")
    if was is not None and float(cast(float, was)) != shard_seconds:
        return f"with --shard-seconds {float(cast(float, was)):g}, not {shard_seconds:g}"
    old = {it["id"]: it["path"] for shard in store.plan for it in shard}
    new = {it["id"]: it["path"] for shard in plan for it in shard}
    added = sorted(set(new) - set(old))
    gone = sorted(set(old) - set(new))
    moved = sorted(i for i in set(old) & set(new) if old[i] != new[i])
    parts = [f"{len(ids)} utterance(s) {what} ({', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''})"
             for ids, what in ((added, "not in it"), (gone, "no longer in the input"),
                               (moved, "at another path")) if ids]
    return "from a different input: " + ("; ".join(parts) if parts else "its shards are grouped otherwise (another --shard-seconds?)")


def compute_features(waves: list[np.ndarray], cfg: AudioConfig, with_mag: bool
                     ) -> tuple[np.ndarray, np.ndarray | None, list[int]]:
    """Batched STFT of ragged waveforms -> concatenated ``[frames, n_mels]`` (and magnitudes)."""
    mags, mels = utterance_features(waves, cfg, with_mag)
    return (np.concatenate(mels), np.concatenate(mags) if with_mag else None,
            [m.shape[0] for m in mels])


def extract_shard(store_path: str, index: int, items: list[dict], cfg_dict: dict,
                  with_mag: bool, threads: int) -> dict:
    """Worker task: read a shard's audio, write its arrays, then its completion marker."""
    torch.set_num_threads(threads)
    cfg = AudioConfig.from_dict(cfg_dict)
    store = Store(store_path, "r+")
    name = shard_name(index)
    waves, kept, failures = [], [], []
    for it in items:
        try:
            y = load(it["path"], cfg.sample_rate)
            if len(y) < cfg.n_fft:
                raise AudioError(f"{it['path']}: too short ({len(y)} samples at "
                                 f"{cfg.sample_rate} Hz; need at least n_fft={cfg.n_fft})")
        except AudioError as exc:
            failures.append(asdict(Failure(it["id"], it["path"], "extract", str(exc))))
            continue
        waves.append(y)
        kept.append(it)
    group = store.reset_shard(name)
    utterances = []
    if waves:
        mel, mag, n_frames = compute_features(waves, cfg, with_mag)
        store.write_array(group, "mel", mel)
        if mag is not None:
            store.write_array(group, "mag_true", mag)
        offset = 0
        for it, y, n in zip(kept, waves, n_frames):
            utterances.append({"id": it["id"], "offset": offset, "n_frames": n,
                               "n_samples": len(y), "source": it["path"]})
            offset += n
    else:
        store.write_array(group, "mel", np.zeros((0, cfg.n_mels), np.float32))
    group.attrs.update({"utterances": utterances, "failures": failures, "with_mag": with_mag})
    group.attrs["extract"] = {"complete": True}  # the marker, last
    return {"n": len(utterances), "seconds": sum(len(w) for w in waves) / cfg.sample_rate}


def extract(inputs: list[str | Path] | str | Path, out: str | Path, config: AudioConfig, *,
            with_mag: bool = False, workers: int = 1, shard_seconds: float = DEFAULT_SHARD_SECONDS,
            cluster: str = "local", profile: str | None = None, progress: bool = True,
            overwrite: bool = False, exclude: Sequence[str | Path] = ()) -> StageResult:
    """Extract mels from a folder / manifest / files into ``out`` (a zarr store).

    Resumable: re-running with the same input and config skips completed shards. Bad files are
    recorded (``<store>.failures.csv``) and skipped; the result lists them. ``exclude``:
    folders inside an input folder that are not searched (``pipeline run``'s own output).
    """
    t0 = time.perf_counter()
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    out = Path(out)
    check_writable(out.parent)
    utts, header_failures = resolve_inputs(list(inputs), exclude)
    plan = plan_shards(utts, shard_seconds)
    source = ", ".join(str(i) for i in inputs)
    if out.exists() and not overwrite:
        store = Store(out, "r+")
        store.check_config(config, "the requested config (use --overwrite or another --out)")
        if store.plan != plan:
            raise StoreError(f"{out} was extracted {plan_difference(store, plan, shard_seconds)}; "
                             "re-run with the same input and options, use --overwrite to "
                             "replace it, or choose another --out")
        if with_mag and any(not store.shard_attrs(s).get("with_mag", True)
                            for s in store.shard_names() if store.is_complete(s)):
            raise StoreError(f"{out} was extracted without --with-mag; use --overwrite to redo it")
    else:
        Store.check_replaceable(out, list(inputs))
        store = Store.create(out, config, plan, source)
        store.root.attrs["shard_seconds"] = shard_seconds
    # a shard marked complete whose arrays were damaged since (a chunk file lost) is redone
    todo = [i for i in range(len(plan)) if not store.is_complete(shard_name(i))
            or store.damage(shard_name(i), ("mel", "mag_true")) is not None]
    threads = threads_per_worker(workers, cluster, profile)
    tasks = [(i, (str(out), i, plan[i], config.to_dict(), with_mag, threads)) for i in todo]
    res = StageResult(store=out, skipped_shards=len(plan) - len(todo), failures=header_failures)
    run_stage(extract_shard, tasks, res, stage="extract", items_of=lambda key: plan[key],
              failures_csv=failures_csv_path(out), desc=f"extract {out.name}", t0=t0,
              workers=workers, cluster=cluster, profile=profile, progress=progress,
              recorded=lambda: [Failure(**f) for f in store.failures()])
    store.touch()
    return res
