"""``pipeline phase``: magnitudes in a store -> one wav per utterance (``<id>.wav``).

Resumable at the utterance level: a wav that exists is complete (every write is atomic), so a
re-run only computes the missing ones, and only when the folder's run record (the
:class:`PhaseSettings` of the run that wrote it) matches this run.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from pipeline.errors import UsageError
from pipeline.io.audio import AudioFormat, Level, clipped_ids, file_level, write_wav
from pipeline.io.manifest import write_output_lists
from pipeline.io.results import Failure, StageResult, check_writable, claim_output, write_report
from pipeline.io.store import Entry, Store, store_items
from pipeline.parallel.batching import (
    buckets,
    for_each_batch,
    phase_batch_frames,
    resolve_device,
    workers_for,
)
from pipeline.parallel.tasks import threads_per_worker
from pipeline.stages._runner import run_stage
from pipeline.synthesis import (
    AlgoOptions,
    Inverter,
    check_route,
    default_iters,
    invert_frames,
    reconstruct,
    resolve_inverter,
    resolve_project,
    resolve_tol,
)

# Where the magnitudes come from: the store's arrays, or the mel inverted in memory, batch
# by batch (no magnitude written: the store stays smaller than the audio).
SOURCES = {"mag": "mag", "true": "mag_true", "mel": "mel"}


def resolve_source(source: str, store: Store) -> str:
    """``auto``: the magnitudes ``invert`` wrote when every shard has them, else the mel
    inverted in memory; a store inverted only in part is refused (finish or redo `invert`)."""
    if source != "auto":
        return source
    names = store.shard_names()
    done = sum(store.is_complete(n, "mag") for n in names)
    if names and done == len(names):
        return "mag"
    if not any(store.shard_attrs(n).get("mag") for n in names):
        return "mel"
    raise UsageError(f"{store.path}: `pipeline invert` finished {done} of {len(names)} shards: "
                     "re-run it to finish, or pass --source mel to invert in memory instead")


INVERT_BATCH_FRAMES = 4096   # padded frames per batch of the in-memory inversion (source mel)
# With several workers the last 2 x workers shard tasks are cut into parts of about this much
# audio (whole buckets), so that the workers run out of work together instead of one waiting
# on the other's last whole shard (see plan_tasks).
TAIL_PART_SECONDS = 10.0

Part = tuple[int, int] | None   # a range of a shard's buckets; None: the whole shard


def wav_path(out_dir: Path, uid: str, suffix: str = ".wav") -> Path:
    return out_dir / f"{uid}{suffix}"


def level_row(uid: str, seconds: float, level: Level, iterations: int | None = None) -> dict:
    """A row of the run's report: the level an output was written at (and the iterations
    that made it, when known)."""
    return {"id": uid, "seconds": round(seconds, 4), "peak_dbfs": round(level.peak_dbfs, 2),
            "clipped": round(level.clipped, 6), "gain_db": round(level.gain_db, 2),
            **({"iterations": iterations} if iterations is not None else {})}


def report_levels(out: Path, name: str, rows: list[dict], ids: list[str], sample_rate: int,
                  suffix: str = ".wav") -> tuple[Path | None, list[str]]:
    """``out/name``: the level of every output of ``ids`` (this run's rows, an earlier run's,
    or read back from the file), and the ids that clipped."""
    def from_file(uid: str) -> dict | None:
        p = wav_path(out, uid, suffix)
        if not p.exists():
            return None
        return level_row(uid, sf.info(str(p)).frames / sample_rate, file_level(p))

    path, all_rows = write_report(out / name, rows, ids, from_file)
    return path, clipped_ids(all_rows)


@dataclass(frozen=True)
class PhaseSettings:
    """Everything that makes a ``phase`` run's wavs what they are, resolved (no ``auto``): the
    run record (:meth:`record`) a resume must match, and what the workers are given."""
    algo: str
    iters: int
    source: str
    init: str
    project: str
    seed: int
    options: AlgoOptions = AlgoOptions()
    inverter: Inverter = Inverter("pinv")     # source "mel": the in-memory inversion
    peak_dbfs: float | None = None            # each output scaled to this peak (None: as is)
    fmt: AudioFormat = AudioFormat()          # wav or flac, sample type

    def record(self, store: Store, magnitudes: dict) -> dict:
        """The run record (``WAV_DIR/.pipeline-run.json``): the store, where its magnitudes
        came from (``magnitudes``), and every setting that changes the output."""
        return {"stage": "phase", "store": str(store.path.resolve()),
                "store_created": store.root.attrs.get("created"), "magnitudes": magnitudes,
                "algo": self.algo, "iters": self.iters, "source": self.source,
                "init": self.init, "project": self.project, "seed": self.seed,
                "options": dict(sorted(self.options.for_algo(self.algo).items())
                                + ([("tol", self.options.tol)] if self.options.tol else [])),
                **({"peak_dbfs": self.peak_dbfs} if self.peak_dbfs is not None else {}),
                **self.fmt.record()}


@dataclass(frozen=True)
class PhaseJob:
    """What every shard of one ``phase`` run shares (sent to the workers with each shard):
    the settings, and where and how to run them (which does not change the output)."""
    store_path: str
    out_dir: str
    settings: PhaseSettings
    device: str = "cpu"
    batch_frames: int = field(default_factory=lambda: phase_batch_frames(torch.device("cpu")))
    threads: int = 1

    @property
    def joint(self) -> bool:
        """Iterations refine the magnitude within the store's mel (read with the magnitudes)."""
        return self.settings.project == "mel"


def shard_buckets(entries: list, batch_frames: int, part: Part = None) -> list[list[int]]:
    """A shard's batches (indices into ``entries``), all or the range ``part`` of them: a
    function of the shard alone, so a resumed or differently split run batches every
    utterance as an uninterrupted one does."""
    groups = buckets([e.n_frames for e in entries], batch_frames)
    return groups if part is None else groups[part[0]:part[1]]


def phase_shard(job: PhaseJob, name: str, part: Part = None) -> dict:
    """Worker task: one shard, or the buckets ``part`` = ``(start, stop)`` of it. A bucket with
    any wav missing is recomputed whole (less its invalid magnitudes), so a resumed run
    computes exactly what an uninterrupted one does."""
    torch.set_num_threads(job.threads)
    st = job.settings
    store_path, source, batch_frames = job.store_path, st.source, job.batch_frames
    store = Store(store_path)
    cfg = store.config
    out = Path(job.out_dir)
    entries = store.entries(name)
    groups = shard_buckets(entries, batch_frames, part)
    mine = [entries[i] for g in groups for i in g]
    if all(wav_path(out, e.id, st.fmt.suffix).exists() for e in mine):
        return {"n": 0, "seconds": 0.0, "failures": []}
    lo = min(e.offset for e in mine)
    rows = slice(lo, max(e.offset + e.n_frames for e in mine))
    data = store.read_array(name, SOURCES[source], rows=rows)
    mel = (data if source == "mel" else
           store.read_array(name, "mel", rows=rows) if job.joint else None)
    failures, bad = [], set()
    for e in mine:
        m = data[e.offset - lo:e.offset - lo + e.n_frames]
        if source == "mel" and not np.isfinite(m).all():
            failures.append(Failure(e.id, e.source, "phase", f"{store_path}: mel of {e.id} "
                                    "contains NaN or Inf; re-extract it"))
            bad.add(e.id)
        elif source != "mel" and (not np.isfinite(m).all() or (m < 0).any()):
            failures.append(Failure(e.id, e.source, "phase", f"{store_path}: magnitude of {e.id} "
                                    "has NaN/Inf or negative values; re-run `pipeline invert`"))
            bad.add(e.id)
    dev = resolve_device(job.device)
    inverted: dict[str, np.ndarray] = {}
    if source == "mel":   # invert in memory (no magnitude is written), the task's items at once:
        model = None      # the conv net runs 2-3x faster on large batches than on FGLA's
        if st.inverter.method == "model":
            from pipeline.models.inverter import shared_invert_model
            model = shared_invert_model(st.inverter.weights, cfg, dev)
        todo = [e for g in groups if not all(wav_path(out, entries[i].id, st.fmt.suffix).exists() for i in g)
                for e in (entries[i] for i in g) if e.id not in bad]
        got = invert_frames([data[e.offset - lo:e.offset - lo + e.n_frames] for e in todo], cfg,
                            st.inverter.method, model=model, device=dev,
                            batch_frames=max(batch_frames, INVERT_BATCH_FRAMES))
        inverted = {e.id: m for e, m in zip(todo, got)}
    written: list[tuple[Entry, Level, int]] = []   # list.append is atomic: groups run on threads

    def one(group: list[int]) -> None:
        items = [entries[i] for i in group if entries[i].id not in bad]
        if all(wav_path(out, e.id, st.fmt.suffix).exists() for e in items):
            return
        mels = (None if mel is None else
                [mel[e.offset - lo:e.offset - lo + e.n_frames] for e in items])
        if source == "mel":
            mags = [inverted[e.id] for e in items]
        else:
            mags = [data[e.offset - lo:e.offset - lo + e.n_frames] for e in items]
        ran: list[int] = []
        waves = reconstruct(mags,
                            [e.n_samples for e in items], cfg, st.algo, n_iter=st.iters,
                            init=st.init, device=dev, batch_frames=batch_frames, seed=st.seed,
                            project=st.project, mels=mels if job.joint else None,
                            options=st.options, iterations=ran)
        for e, y, n in zip(items, waves, ran):
            if not wav_path(out, e.id, st.fmt.suffix).exists():
                written.append((e, write_wav(wav_path(out, e.id, st.fmt.suffix), y,
                                             cfg.sample_rate, st.peak_dbfs, st.fmt), n))

    # The groups on one thread each (torch single-threaded in each, see for_each_batch): a
    # group is one cache-sized batch, too small to split every op across the cores.
    for_each_batch(one, groups, dev)
    levels = [level_row(e.id, e.n_samples / cfg.sample_rate, lv, n) for e, lv, n in written]
    return {"n": len(written), "seconds": sum(e.n_samples for e, _, _ in written) / cfg.sample_rate,
            "failures": failures, "rows": levels}


def plan_tasks(store: Store, job: PhaseJob, workers: int, part_seconds: float = TAIL_PART_SECONDS
               ) -> tuple[list[tuple[tuple[str, Part], tuple]], dict[tuple[str, Part], int]]:
    """The tasks of a run, ``((shard, part), (job, shard, part))``, in submission order
    (dask starts them in that order): whole shards, then the last ``2 x workers`` shards cut
    into parts of about ``part_seconds`` of audio. A lone worker gets whole shards; with
    several, whole shards only would leave one worker idle while another finishes the last
    shard (2 workers on 3 shards: at most 1.5x). Tasks whose wavs all exist are left out.
    Also returns each task's number of missing wavs (the progress bar counts utterances)."""
    out = Path(job.out_dir)
    names = store.shard_names()
    split_from = len(names) - 2 * workers if workers > 1 else len(names)
    part_samples = part_seconds * store.config.sample_rate
    tasks, todo = [], {}
    for k, name in enumerate(names):
        entries = store.entries(name)
        groups = shard_buckets(entries, job.batch_frames)
        if k < split_from:
            parts: list[tuple[Part, list[int]]] = [(None, [i for g in groups for i in g])]
        else:
            parts, start, acc = [], 0, 0
            for b, g in enumerate(groups):
                acc += sum(entries[i].n_samples for i in g)
                if acc >= part_samples or b == len(groups) - 1:
                    parts.append(((start, b + 1), [i for gg in groups[start:b + 1] for i in gg]))
                    start, acc = b + 1, 0
        for part, idx in parts:
            missing = sum(not wav_path(out, entries[i].id, job.settings.fmt.suffix).exists() for i in idx)
            if missing:
                tasks.append(((name, part), (job, name, part)))
                todo[(name, part)] = missing
    return tasks, todo


def part_items(store: Store, key: tuple[str, Part], batch_frames: int) -> list[dict]:
    """The ``{"id", "path"}`` items of a task (for failure reports)."""
    name, part = key
    items = store_items(store, name)
    if part is None:
        return items
    return [items[i] for g in shard_buckets(store.entries(name), batch_frames, part) for i in g]


def _task_label(key: tuple[str, Part]) -> str:
    name, part = key
    return f"shard {name}" + (f" (buckets {part[0]}-{part[1] - 1})" if part else "")


def _check_inverter(store: Store, degli_weights: str | None, inverter: str | None) -> None:
    """A DeGLI net trained ``--after-model`` fits only the magnitudes of that inverter:
    refuse a store whose ``mag`` came from another method or other weights."""
    from pipeline.io.weights import pick_for, read_card, resolve
    card = read_card(resolve(degli_weights or pick_for(store.config, "DeGLI")))
    want = card.get("invert_weights_sha256")
    for name in store.shard_names():
        got = store.shard_attrs(name).get("mag", {})
        if got.get("method") != "model" or (want and got.get("weights_sha256") not in (None, want)):
            made = (f"method {got.get('method')!r}" if got.get("method") != "model" else
                    f"weights {got.get('weights')!r} (sha256 {str(got.get('weights_sha256'))[:12]}...)")
            raise UsageError(f"{store.path}: shard {name}'s magnitudes came from {made}, but DeGLI "
                             f"weights {degli_weights or '(default)'} were trained after inverter "
                             f"{inverter!r} (sha256 {str(want)[:12]}...): re-run `pipeline invert "
                             f"--method model --weights {inverter}` or use --algo fgla")


def _check_degli(store: Store, source: str, weights: str | None) -> None:
    """Refuse, before any work, DeGLI weights that cannot run on these magnitudes."""
    from pipeline.models.degli import load_degli
    net = load_degli(weights, store.config)   # fail early, before any work
    if net.hparams.magnitude == "model" and source == "true":
        raise UsageError(f"DeGLI weights {weights or '(default)'} were trained "
                         f"for the magnitudes of {net.hparams.invert_weights}, not true ones: "
                         "use --source mag after `pipeline invert --method model`, or "
                         "phase-only weights (`pipeline train degli` without --after-model)")
    if net.hparams.magnitude == "model" and source == "mel":
        raise UsageError("DeGLI weights trained --after-model need the magnitudes of "
                         f"{net.hparams.invert_weights} in the store: run `pipeline invert "
                         "--method model` first")
    if net.hparams.magnitude == "model":
        _check_inverter(store, weights, net.hparams.invert_weights)


def phase(store_path: str | Path, out_dir: str | Path, algo: str = "fgla", *,
          n_iter: int | None = None,
          source: str = "auto", init: str = "zeros", device: str = "auto", workers: int = 1,
          batch_frames: int | None = None, seed: int = 0, cluster: str = "local",
          profile: str | None = None, progress: bool = True, threads: int | None = None,
          project: str = "auto", overwrite: bool = False, momentum: float = 0.99,
          weights: str | None = None, warmup: int | None = None, method: str = "pinv",
          invert_weights: str | None = None, peak_dbfs: float | None = None,
          audio_format: str = "wav", subtype: str = "PCM_16",
          tol: float | None = None) -> StageResult:
    """Reconstruct waveforms for every utterance of the store into ``out_dir``.

    ``source``: ``mag`` (what ``invert`` wrote), ``mel`` (the mel inverted in memory with
    ``method``, ``invert_weights`` for ``model``: nothing is written to the store), ``true``
    (the true magnitudes of ``extract --with-mag``: phase-only evaluation) or ``auto``
    (default: ``mag`` when ``invert`` has run, else ``mel``).

    ``project``: ``mag`` holds the store's magnitudes fixed; ``mel`` refines them within the
    store's mel while iterating (joint mel inversion; ``algo="admm"`` always does); ``auto``
    (default): ``mel`` unless the config's frames overlap by less than 75 %, or ``source`` is
    ``true`` (phase-only evaluation) or the algorithm is ``degli``.
    ``n_iter``: default by route (:data:`pipeline.synthesis.DEFAULT_ITERS`); with ``tol`` > 0
    (joint mel inversion by FGLA/GLA; default: the preset's :data:`pipeline.synthesis.DEFAULT_TOL`,
    0 elsewhere) a maximum: each utterance stops when its log-mel error improved by less than
    ``tol`` (relative) over the last check (:func:`pipeline.algorithms.joint.mel_iterate`);
    the report lists the iterations each output took. ``momentum``:
    FGLA's (fgla, the warm-up of degli); ``weights``, ``warmup``: DeGLI's (:class:`AlgoOptions`).
    ``threads``: torch threads per worker (default: cores / workers). A resume keeps the wavs
    only when the store and every setting match the run that wrote them (``out_dir``'s run
    record); ``overwrite`` removes this run's wavs first, and nothing else. ``peak_dbfs``:
    each output scaled so that its peak sits there (e.g. -1); without it the level is the
    reconstruction's, and samples beyond full scale are clipped by the 16-bit write. Either
    way ``out_dir/phase-report.csv`` holds each output's level and clipped fraction.
    ``audio_format`` (wav, flac) and ``subtype`` (PCM_16, PCM_24, FLOAT): how outputs are
    written; ``out_dir/wav.scp`` and ``manifest.jsonl`` list them.
    """
    t0 = time.perf_counter()
    fmt = AudioFormat(audio_format, subtype)
    options = AlgoOptions(momentum=momentum, weights=weights, warmup=warmup)
    extra = options.for_algo(algo)
    check_route(algo, project, None, init)
    if source not in (*SOURCES, "auto"):
        raise UsageError(f"unknown source {source!r}: auto, mag (written by invert), mel "
                         "(inverted in memory) or true")
    store = Store(store_path)
    source = resolve_source(source, store)
    inverter = resolve_inverter(method, invert_weights, store.config) if source == "mel" else Inverter(method)
    check_route(algo, project, store.config, init)
    project = resolve_project(project, store.config, algo, source)
    options = replace(options, tol=resolve_tol(tol, algo, project, store.config))
    if n_iter is None:
        n_iter = default_iters(algo, project, store.config)
    marker = "mag" if source == "mag" else "extract"
    missing = store.incomplete(marker)
    if missing:
        step = {"mag": "`pipeline invert` on it",
                "true": "`pipeline extract --with-mag` again, the command that made it"
                }.get(source, "`pipeline extract` again, the command that made it")
        raise UsageError(f"{store_path}: {len(missing)} shard(s) have no complete "
                         f"'{SOURCES[source]}' (shard {missing[0]} first); run {step}, which "
                         "redoes only those")
    if algo == "degli":
        _check_degli(store, source, extra.get("weights"))
    if source == "true" and any(not store.shard_attrs(n).get("with_mag", True)
                                for n in store.shard_names()):
        raise UsageError(f"{store_path}: no true magnitudes (extracted without --with-mag): "
                         "use --source mag, or re-extract with --with-mag")
    out = Path(out_dir)
    check_writable(out)
    for stale in out.rglob(".tmp-*"):         # left by a run killed mid-write
        stale.unlink(missing_ok=True)
    settings = PhaseSettings(algo, n_iter, source, init, project, seed, options, inverter,
                             peak_dbfs, fmt)
    mags = ({"in_memory": {k: v for k, v in inverter.record().items() if v is not None}}
            if source == "mel" else
            {n: {k: v for k, v in store.shard_attrs(n).get("mag", {}).items()
                 if k in ("method", "weights", "weights_sha256")} for n in store.shard_names()})
    entries = store.all_entries()
    claim_output(out, settings.record(store, mags), [wav_path(out, e.id, fmt.suffix) for e in entries],
                 overwrite, sources=[e.source for e in entries])
    workers = workers_for(device, workers)
    threads = threads or threads_per_worker(workers, cluster, profile)
    batch_frames = batch_frames or phase_batch_frames(resolve_device(device))
    job = PhaseJob(str(store_path), str(out), settings, device, batch_frames, threads)
    tasks, todo = plan_tasks(store, job, workers)
    started = {name for (name, _), _ in tasks}
    res = StageResult(store=out, skipped_shards=len(store.shard_names()) - len(started))
    results = run_stage(phase_shard, tasks, res, stage="phase",
                        items_of=lambda key: part_items(store, key, batch_frames),
                        label=_task_label, failures_csv=out / "failures.csv",
                        desc=f"phase ({algo}, {n_iter} it), utterances", t0=t0, workers=workers,
                        cluster=cluster, profile=profile, progress=progress, sizes=todo)
    rows = [row for r in results if not r.error for row in r.value.get("rows", [])]
    res.report, res.clipped = report_levels(out, "phase-report.csv", rows,
                                            [e.id for e in entries], store.config.sample_rate,
                                            fmt.suffix)
    write_output_lists(out, [(e.id, wav_path(out, e.id, fmt.suffix)) for e in entries])
    return res
