"""Shared set-up of the benchmarks: the test corpus, its true magnitudes, repeated manifests."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.config import AudioConfig
from pipeline.dsp.mel import utterance_features
from pipeline.io.audio import load
from pipeline.io.manifest import Utterance
from pipeline.recipes.pocketsphinx import prepare_pocketsphinx


def true_magnitudes(cfg: AudioConfig):
    """(waveforms, per-utterance true magnitudes [T, F], lengths, seconds of audio)."""
    ys = [load(u.path, cfg.sample_rate) for u in prepare_pocketsphinx()]
    mags = utterance_features(ys, cfg)[0]
    return ys, mags, [len(y) for y in ys], sum(len(y) for y in ys) / cfg.sample_rate


class StoredTestCorpus:
    """The test corpus through ``extract`` (a temporary store): its mels (and, ``with_mag``,
    true magnitudes) per utterance, references and lengths, and :meth:`fgla_pesq`, the mean
    PESQ-WB of FGLA (zero phase, magnitude fixed) on magnitudes for it."""

    def __init__(self, cfg: AudioConfig, with_mag: bool = False):
        import tempfile

        from pipeline.io.store import Store
        from pipeline.stages.extract import extract
        self.cfg = cfg
        with tempfile.TemporaryDirectory() as tmp:
            man = Path(tmp) / "m.jsonl"
            prepare_pocketsphinx(man)
            extract(man, Path(tmp) / "s.zarr", cfg, with_mag=with_mag, progress=False)
            store = Store(Path(tmp) / "s.zarr")
            ents, mels = zip(*store.iter_utterances("mel"))
            self.trues = ([m for _, m in store.iter_utterances("mag_true")] if with_mag else [])
        self.mels = list(mels)
        self.refs = [load(e.source, cfg.sample_rate) for e in ents]
        self.lengths = [e.n_samples for e in ents]

    def fgla_pesq(self, mags: list[np.ndarray], n_iter: int = 100) -> float:
        from pesq import pesq

        from pipeline.synthesis import reconstruct
        if self.cfg.sample_rate != 16000:
            raise ValueError("fgla_pesq scores 16 kHz configs only (wideband PESQ)")
        waves = reconstruct(mags, self.lengths, self.cfg, "fgla", n_iter=n_iter)
        scores = [pesq(16000, y, w, "wb") for y, w in zip(self.refs, waves)]
        return round(float(np.mean(scores)), 3)


def repeated(times: int) -> list[Utterance]:
    """The test corpus ``times`` over, as distinct ids (r0/..., r1/...)."""
    return [Utterance(f"r{k}/{u.id}", u.path, u.sample_rate, u.channels, u.num_samples, u.duration)
            for k in range(times) for u in prepare_pocketsphinx()]


def fgla_job(store, dest):
    """The phase stage's job the dask benchmarks time: FGLA 100 on the true magnitudes, 1 thread."""
    from pipeline.stages.phase import PhaseJob, PhaseSettings
    return PhaseJob(str(store), str(dest), PhaseSettings("fgla", 100, "true", "zeros", "mag", 0),
                    threads=1)


def run_shards(client, job, names) -> None:
    """The stage's shard task for each of ``names`` (whole) on a dask ``client``; waits, checks."""
    _submit(client, [((n, None), (job, n)) for n in names])


def run_planned(client, job, workers: int) -> None:
    """The tasks the stage itself plans for ``workers`` (the last shards in parts), on a dask
    ``client``, submitted in the stage's order; waits, checks."""
    from pipeline.io.store import Store
    from pipeline.stages.phase import plan_tasks
    _submit(client, plan_tasks(Store(job.store_path), job, workers)[0])


def _submit(client, tasks) -> None:
    from pipeline.parallel.tasks import _guarded
    from pipeline.stages.phase import phase_shard
    fs = [client.submit(_guarded, phase_shard, key, args, pure=False) for key, args in tasks]
    errors = [f.result().error for f in fs]
    assert not any(errors), errors


def _cpu_model() -> str | None:
    """The CPU's model name (Linux), which timings depend on: two VMs of this project with 2
    vCPUs each ran the same benchmark 30 % apart."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def save_results(name: str, payload) -> Path:
    """``benchmarks/results/NAME.json``: the figures, the command that made them, the machine."""
    import datetime
    import json
    import os
    import platform
    import sys

    import torch

    out = Path(__file__).resolve().parent / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
              "date": datetime.date.today().isoformat(),
              "machine": {"cpu": _cpu_model() or platform.processor() or platform.machine(),
                          "cores": os.cpu_count(), "torch": torch.__version__,
                          "torch_threads": torch.get_num_threads()},
              "results": payload}
    out.write_text(json.dumps(record, indent=1))
    print(f"-> {out}", flush=True)
    return out
