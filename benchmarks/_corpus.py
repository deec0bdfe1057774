"""Shared set-up of the benchmarks: the test corpus, its true magnitudes, repeated manifests."""
from __future__ import annotations

import numpy as np

from pipeline.audio import load
from pipeline.config import AudioConfig
from pipeline.manifest import Utterance, prepare_pocketsphinx
from pipeline.mel import ragged_batch, stft


def true_magnitudes(cfg: AudioConfig):
    """(waveforms, per-utterance true magnitudes [T, F], lengths, seconds of audio)."""
    ys = [load(u.path, cfg.sample_rate) for u in prepare_pocketsphinx()]
    batch, n = ragged_batch(ys, cfg)
    full = stft(batch, cfg, padded=True).abs().transpose(1, 2).numpy()
    mags = [np.ascontiguousarray(full[i, :k]) for i, k in enumerate(n)]
    return ys, mags, [len(y) for y in ys], sum(len(y) for y in ys) / cfg.sample_rate


def repeated(times: int) -> list[Utterance]:
    """The test corpus ``times`` over, as distinct ids (r0/..., r1/...)."""
    return [Utterance(f"r{k}/{u.id}", u.path, u.sample_rate, u.channels, u.num_samples, u.duration)
            for k in range(times) for u in prepare_pocketsphinx()]


def fgla_job(store, dest):
    """The phase stage's job the dask benchmarks time: FGLA 100 on the true magnitudes, 1 thread."""
    from pipeline.phase.stage import PhaseJob
    return PhaseJob(str(store), str(dest), "fgla", 100, source="true", threads=1)


def run_shards(client, job, names) -> None:
    """The stage's shard task for each of ``names`` (whole) on a dask ``client``; waits, checks."""
    _submit(client, [((n, None), (job, n)) for n in names])


def run_planned(client, job, workers: int) -> None:
    """The tasks the stage itself plans for ``workers`` (the last shards in parts), on a dask
    ``client``, submitted in the stage's order; waits, checks."""
    from pipeline.phase.stage import plan_tasks
    from pipeline.store import Store
    _submit(client, plan_tasks(Store(job.store_path), job, workers)[0])


def _submit(client, tasks) -> None:
    from pipeline.parallel import _guarded
    from pipeline.phase.stage import phase_shard
    fs = [client.submit(_guarded, phase_shard, key, args, pure=False) for key, args in tasks]
    errors = [f.result().error for f in fs]
    assert not any(errors), errors
