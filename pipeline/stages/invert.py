"""``pipeline invert``: read each shard's mel, write its ``mag`` array, then its marker."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import UsageError
from pipeline.io.results import Failure, StageResult
from pipeline.io.store import Store, StoreError, failures_csv_path, store_items
from pipeline.parallel.batching import resolve_device, workers_for
from pipeline.parallel.tasks import threads_per_worker
from pipeline.stages._runner import run_stage
from pipeline.synthesis import invert_frames, resolve_inverter


def invert_shard(store_path: str, name: str, method: str, weights: str | None, device: str,
                 batch_frames: int, threads: int, n_iter: int,
                 weights_sha256: str | None = None) -> dict:
    """Worker task: one shard's ``mag``. ``weights_sha256`` (the card's, read once by
    :func:`invert`) is recorded with it: which weights exactly, since a name may be retrained."""
    torch.set_num_threads(threads)
    store = Store(store_path, "r+")
    cfg = store.config
    dev = resolve_device(device)
    model = None
    if method == "model":
        from pipeline.models.inverter import shared_invert_model
        model = shared_invert_model(weights, cfg, dev)
    entries = store.entries(name)
    mel = store.read_array(name, "mel")
    group = store.shard_group(name)
    if group is None:
        raise StoreError(f"{store_path}: shard {name} is missing or damaged; re-run `pipeline extract`")
    group.attrs["mag"] = {"complete": False}
    result = np.zeros((mel.shape[0], cfg.n_freq), np.float32)
    failures = []
    good = []
    for e in entries:
        frames = mel[e.offset:e.offset + e.n_frames]
        if not np.isfinite(frames).all():
            failures.append({"id": e.id, "path": e.source, "stage": "invert",
                             "reason": f"{store_path}: mel of {e.id} contains NaN or Inf"})
        else:
            good.append(e)
    mags = invert_frames([mel[e.offset:e.offset + e.n_frames] for e in good], cfg, method,
                         model=model, device=dev, batch_frames=batch_frames, n_iter=n_iter)
    for e, m in zip(good, mags):
        result[e.offset:e.offset + e.n_frames] = m
    store.write_array(group, "mag", result)
    group.attrs["mag"] = {"complete": True, "method": method, "weights": weights,
                          "weights_sha256": weights_sha256, "failures": failures}
    return {"n": len(good), "seconds": sum(e.n_samples for e in good) / cfg.sample_rate}


def invert(store_path: str | Path, method: str = "pinv", *, weights: str | None = None,
           device: str = "auto", workers: int = 1, batch_frames: int = 1000, n_iter: int = 50,
           cluster: str = "local", profile: str | None = None, progress: bool = True,
           overwrite: bool = False) -> StageResult:
    """Write the estimated magnitude ``mag`` of every shard of ``store_path``.

    Resumable: shards already inverted with the same method and weights (name and, where
    recorded, sha256) are skipped.
    """
    t0 = time.perf_counter()
    store = Store(store_path, "r+")
    inverter = resolve_inverter(method, weights, store.config)
    weights, digest = inverter.weights, inverter.sha256
    if store.incomplete():
        raise UsageError(f"{store_path}: extraction is incomplete ({len(store.incomplete())} "
                         "shards); re-run `pipeline extract` with the same arguments first")
    workers = workers_for(device, workers)
    todo = []
    for name in store.shard_names():
        done = store.shard_attrs(name).get("mag", {})
        same = (done.get("method") == method and done.get("weights") == weights
                and done.get("weights_sha256") in (None, digest))
        if overwrite or not (done.get("complete") and same):
            todo.append(name)
    threads = threads_per_worker(workers, cluster, profile)
    tasks = [(n, (str(store_path), n, method, weights, device, batch_frames, threads, n_iter,
                  digest)) for n in todo]
    res = StageResult(store=Path(store_path), skipped_shards=len(store.shard_names()) - len(todo))
    run_stage(invert_shard, tasks, res, stage="invert", items_of=lambda key: store_items(store, key),
              failures_csv=failures_csv_path(store_path, "invert"), desc=f"invert ({method})",
              t0=t0, workers=workers, cluster=cluster, profile=profile, progress=progress,
              recorded=lambda: [Failure(**f) for n in store.shard_names()
                                for f in store.shard_attrs(n).get("mag", {}).get("failures", [])])
    store.touch()
    res.seconds = time.perf_counter() - t0
    return res
