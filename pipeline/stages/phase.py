"""``pipeline phase``: magnitudes in a store -> one wav per utterance (``<id>.wav``).

Resumable at the utterance level: a wav that exists is complete (every write is atomic), so a
re-run only computes the missing ones.
"""
from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pipeline.algorithms.gla import fgla, gla, initial_phase
from pipeline.algorithms.joint import joint
from pipeline.config import AudioConfig
from pipeline.dsp.stft import FramePair
from pipeline.errors import UsageError
from pipeline.io.audio import write_wav
from pipeline.io.results import Failure, StageResult, check_writable, claim_output
from pipeline.io.store import Entry, Store, store_items
from pipeline.models.degli import degli
from pipeline.parallel.batching import (
    buckets,
    for_each_batch,
    phase_batch_frames,
    resolve_device,
    stack_frames,
    workers_for,
)
from pipeline.parallel.tasks import threads_per_worker
from pipeline.stages._runner import run_stage
from pipeline.stages.invert import METHODS, invert_frames, mel_floor

ALGOS: dict[str, Callable] = {"gla": gla, "fgla": fgla, "degli": degli, "admm": joint}
# What each iteration projects onto: the inverted magnitude (held fixed), or the magnitudes
# whose mel is the store's mel (joint mel inversion, pipeline.algorithms.joint); ``auto``: ``mel``
# where frames overlap by >= 75 %. With 50 % overlap (torchaudio-16k: n_fft 400, hop 200) the
# STFT has too little redundancy for consistency to add detail: joint 2.44 vs fixed 2.55 PESQ
# (tests/test_joint.py), while every 75 %-overlap preset gains 0.1-0.8.
PROJECTS = ("auto", "mag", "mel")
INITS = ("zeros", "random", "pghi")


def resolve_project(project: str, cfg: AudioConfig, algo: str = "fgla",
                    source: str = "mag") -> str:
    """What the iterations project onto, ``mel`` or ``mag``: ``admm`` is always joint; ``auto``
    holds the magnitude fixed for DeGLI, for true magnitudes (phase-only evaluation) and for
    frames that overlap by less than 75 %."""
    if algo == "admm":
        return "mel"
    if project == "auto":
        if algo == "degli" or source == "true":
            return "mag"
        return "mel" if cfg.n_fft >= 4 * cfg.hop_length else "mag"
    return project


# Default iterations per route, from the curves (BENCHMARKS.md, joint mel inversion): FGLA on
# a fixed magnitude gains nothing past ~100; the joint route is still gaining at 400 (test
# corpus 3.57 / 3.69 / 3.74 PESQ at 100 / 400 / 800 from the pseudo-inverse).
DEFAULT_ITERS = {"mag": 100, "mel": 800}


def default_iters(algo: str, project: str, cfg: AudioConfig) -> int:
    """``--iters`` when none is given: by the route that ``algo`` and ``project`` resolve to."""
    return DEFAULT_ITERS[resolve_project(project, cfg, algo)]
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
PHASE_BATCH_FRAMES = 256   # the CPU default (parallel.batching.PHASE_BATCH_FRAMES)
INVERT_BATCH_FRAMES = 4096   # padded frames per batch of the in-memory inversion (source mel)
# With several workers the last 2 x workers shard tasks are cut into parts of about this much
# audio (whole buckets), so that the workers run out of work together instead of one waiting
# on the other's last whole shard (see plan_tasks).
TAIL_PART_SECONDS = 10.0

Part = tuple[int, int] | None   # a range of a shard's buckets; None: the whole shard


def wav_path(out_dir: Path, uid: str) -> Path:
    return out_dir / f"{uid}.wav"


def check_route(algo: str, project: str, cfg: AudioConfig | None) -> None:
    """Refuse, before any work, a phase route that cannot run (``cfg``: when known)."""
    if algo not in ALGOS:
        raise UsageError(f"unknown algorithm {algo!r}: choose one of {', '.join(ALGOS)}")
    if project not in PROJECTS:
        raise UsageError(f"unknown projection {project!r}: choose one of {', '.join(PROJECTS)}")
    if algo == "degli" and project == "mel":
        raise UsageError("--algo degli holds the magnitude fixed: use --project mag, or "
                         "--algo fgla/admm with --project mel")
    if algo == "admm" and cfg is not None and cfg.power != 1:
        raise UsageError(f"--algo admm is written for magnitude mels, and {cfg.name} is a power "
                         "mel (power = 2): use --algo fgla --project mel")


# Long items in chunks: an hour-long recording as one batch needs several full-length complex
# spectrograms at once (a 20-minute item peaked at 2.65 GB). Chunks of CHUNK_FRAMES frames
# overlap by CHUNK_OVERLAP frames on each side; each chunk starts from the phase its
# predecessor found on the overlap (so neighbours agree there) and the outputs are
# cross-faded across the overlap's middle half.
LONG_FRAMES = 4096           # 65 s at 16 kHz / hop 256
CHUNK_FRAMES = 2048
CHUNK_OVERLAP = 32


def _reconstruct_long(mag: np.ndarray, mel: np.ndarray | None, n_samples: int, cfg: AudioConfig,
                      run: Callable, init: str, gen: torch.Generator, device: torch.device,
                      chunk_frames: int) -> np.ndarray:
    """One long item ``[T, F]`` in overlapping chunks (see :data:`CHUNK_FRAMES`)."""
    T, hop, O = mag.shape[0], cfg.hop_length, CHUNK_OVERLAP
    out = np.zeros(n_samples, np.float32)
    bounds = list(range(0, T, chunk_frames))[1:]           # chunk k's core: [b_k, b_{k+1})
    starts = [0] + [b - O for b in bounds]
    ends = [b + O for b in bounds] + [T]
    prev: torch.Tensor | None = None                        # previous chunk's STFT [1, T', F]
    fade = O // 2 * hop                                     # half-width of the cross-fade
    for k, (s, e) in enumerate(zip(starts, ends)):
        m = torch.from_numpy(np.ascontiguousarray(mag[s:e]))[None].to(device)
        length = min(n_samples - s * hop, cfg.n_samples(e - s))
        lengths = torch.tensor([length])
        start: str | torch.Tensor = init
        if prev is not None:
            ph = initial_phase(m, init, gen, cfg)
            ov = ends[k - 1] - s                            # frames shared with chunk k-1
            shared = prev[:, -ov:][:, :e - s]
            ph[:, :shared.shape[1]] = shared / shared.abs().clamp_min(1e-12)
            start = ph
        mm = None if mel is None else torch.from_numpy(
            np.ascontiguousarray(mel[s:e]))[None].to(device)
        x, pair = run(m, mm, lengths, gen, start)
        prev = pair.stft(x)
        y = pair.crop(x, [length])[0].float().cpu().numpy()
        # weights: 1 in the core, linear ramps centred on the chunk boundaries
        w = np.ones(length, np.float32)
        pos = np.arange(length) + s * hop                   # original sample of each y sample
        if k > 0:
            c = bounds[k - 1] * hop
            w *= np.clip((pos - (c - fade)) / (2 * fade), 0, 1)
        if k < len(bounds):
            c = bounds[k] * hop
            w *= np.clip(((c + fade) - pos) / (2 * fade), 0, 1)
        a = s * hop
        out[a:a + length] += w * y
    return out


@dataclass(frozen=True)
class AlgoOptions:
    """The phase algorithms' own options; each algorithm is given only those it takes
    (:meth:`for_algo`), so a misspelled option is a ``TypeError``, not ignored."""
    momentum: float = 0.99              # fgla, the FGLA warm-up of degli, joint fgla
    weights: str | None = None          # degli: weights name or path (default: shipped)
    warmup: int | None = None           # degli: FGLA iterations before the blocks (default: card)
    projection: str = "multiplicative"  # joint (--project mel): multiplicative or affine
    steps: int = 3                      # joint multiplicative: rescalings per iteration
    rho: float = 0.03                   # admm: penalty (chosen on the tuning set)
    lam: float = 1e6                    # admm: weight of the mel fit

    def for_algo(self, algo: str) -> dict:
        if algo == "fgla":
            return {"momentum": self.momentum}
        if algo == "degli":
            return {"weights": self.weights, "warmup": self.warmup, "momentum": self.momentum}
        return {}


def reconstruct(mags: list[np.ndarray], n_samples: list[int], cfg: AudioConfig, algo: str = "fgla",
                *, n_iter: int = 100, init: str = "zeros", device: torch.device | str = "cpu",
                batch_frames: int = PHASE_BATCH_FRAMES, seed: int = 0, project: str = "mag",
                mels: list[np.ndarray] | None = None, long_frames: int = LONG_FRAMES,
                chunk_frames: int = CHUNK_FRAMES, options: AlgoOptions | None = None
                ) -> list[np.ndarray]:
    """Magnitudes ``[T_i, F]`` -> waveforms of ``n_samples[i]`` samples, in length buckets.

    Items longer than ``long_frames`` are reconstructed in chunks of ``chunk_frames``
    (:func:`_reconstruct_long`), so memory stays flat in the item's length.

    ``project="mel"`` (and ``algo="admm"``, which is always joint) refine the magnitude within
    the compressed mels ``mels`` ``[T_i, M]`` while iterating (:mod:`pipeline.algorithms.joint`);
    ``project="mag"`` holds ``mags`` fixed."""
    check_route(algo, project, cfg)
    options = options or AlgoOptions()
    is_joint = resolve_project(project, cfg, algo) == "mel"
    kw = options.for_algo(algo)
    if is_joint:
        if mels is None:
            raise UsageError("joint mel inversion (--project mel, --algo admm) needs the mels")
        fill = mel_floor(cfg)
        method = "admm" if algo == "admm" else options.projection
        kw = {"momentum": 0.0 if algo == "gla" else options.momentum, "steps": options.steps,
              "rho": options.rho, "lam": options.lam}
    fn = ALGOS[algo]

    def run(mag: torch.Tensor, mel: torch.Tensor | None, lengths: torch.Tensor,
            gen: torch.Generator, start: str | torch.Tensor) -> tuple[torch.Tensor, FramePair]:
        if is_joint:
            assert mel is not None
            return joint(mag, mel, lengths, cfg, n_iter=n_iter, method=method, init=start,
                         generator=gen, **kw)
        return fn(mag, lengths, cfg, n_iter=n_iter, init=start, generator=gen, **kw)

    out: list[np.ndarray | None] = [None] * len(mags)

    def one(group: list[int]) -> None:
        gen = torch.Generator().manual_seed(seed + zlib.crc32(str(sorted(group)).encode()))
        if len(group) == 1 and mags[group[0]].shape[0] > long_frames:
            i = group[0]
            out[i] = _reconstruct_long(mags[i], None if mels is None else mels[i], n_samples[i],
                                       cfg, run, init, gen, torch.device(device), chunk_frames)
            return
        batch = stack_frames([mags[i] for i in group]).to(device)
        lengths = torch.tensor([n_samples[i] for i in group])
        mel = (stack_frames([mels[i] for i in group], fill).to(device)  # type: ignore[index]
               if is_joint else None)
        x, pair = run(batch, mel, lengths, gen, init)
        for i, y in zip(group, pair.crop(x, lengths.tolist())):
            out[i] = y.float().cpu().numpy()

    for_each_batch(one, buckets([m.shape[0] for m in mags], batch_frames), torch.device(device))
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class PhaseJob:
    """What every shard of one ``phase`` run shares (sent to the workers with each shard)."""
    store_path: str
    out_dir: str
    algo: str = "fgla"
    n_iter: int = 100
    source: str = "mag"
    init: str = "zeros"
    device: str = "cpu"
    batch_frames: int = PHASE_BATCH_FRAMES
    threads: int = 1
    seed: int = 0
    options: AlgoOptions = AlgoOptions()
    project: str = "mag"
    method: str = "pinv"                 # source "mel": the inversion method
    invert_weights: str | None = None    # source "mel", method "model": its weights

    @property
    def joint(self) -> bool:
        """Iterations refine the magnitude within the store's mel (read with the magnitudes);
        ``project`` is already resolved by :func:`phase`."""
        return self.project == "mel"


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
    store_path, source, batch_frames = job.store_path, job.source, job.batch_frames
    store = Store(store_path)
    cfg = store.config
    out = Path(job.out_dir)
    entries = store.entries(name)
    groups = shard_buckets(entries, batch_frames, part)
    mine = [entries[i] for g in groups for i in g]
    if all(wav_path(out, e.id).exists() for e in mine):
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
        if job.method == "model":
            from pipeline.models.inverter import shared_invert_model
            model = shared_invert_model(job.invert_weights, cfg, dev)
        todo = [e for g in groups if not all(wav_path(out, entries[i].id).exists() for i in g)
                for e in (entries[i] for i in g) if e.id not in bad]
        got = invert_frames([data[e.offset - lo:e.offset - lo + e.n_frames] for e in todo], cfg,
                            job.method, model=model, device=dev,
                            batch_frames=max(batch_frames, INVERT_BATCH_FRAMES))
        inverted = {e.id: m for e, m in zip(todo, got)}
    written: list[Entry] = []   # list.append is atomic: the groups run on threads

    def one(group: list[int]) -> None:
        items = [entries[i] for i in group if entries[i].id not in bad]
        if all(wav_path(out, e.id).exists() for e in items):
            return
        mels = (None if mel is None else
                [mel[e.offset - lo:e.offset - lo + e.n_frames] for e in items])
        if source == "mel":
            mags = [inverted[e.id] for e in items]
        else:
            mags = [data[e.offset - lo:e.offset - lo + e.n_frames] for e in items]
        waves = reconstruct(mags,
                            [e.n_samples for e in items], cfg, job.algo, n_iter=job.n_iter,
                            init=job.init, device=dev, batch_frames=batch_frames, seed=job.seed,
                            project=job.project, mels=mels if job.joint else None,
                            options=job.options)
        for e, y in zip(items, waves):
            if not wav_path(out, e.id).exists():
                write_wav(wav_path(out, e.id), y, cfg.sample_rate)
                written.append(e)

    # The groups on one thread each (torch single-threaded in each, see for_each_batch): a
    # group is one cache-sized batch, too small to split every op across the cores.
    for_each_batch(one, groups, dev)
    done, samples = len(written), sum(e.n_samples for e in written)
    return {"n": done, "seconds": samples / cfg.sample_rate, "failures": failures}


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
            missing = sum(not wav_path(out, entries[i].id).exists() for i in idx)
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


def phase(store_path: str | Path, out_dir: str | Path, algo: str = "fgla", *,
          n_iter: int | None = None,
          source: str = "auto", init: str = "zeros", device: str = "auto", workers: int = 1,
          batch_frames: int | None = None, seed: int = 0, cluster: str = "local",
          profile: str | None = None, progress: bool = True, threads: int | None = None,
          project: str = "auto", overwrite: bool = False, momentum: float = 0.99,
          weights: str | None = None, warmup: int | None = None, method: str = "pinv",
          invert_weights: str | None = None) -> StageResult:
    """Reconstruct waveforms for every utterance of the store into ``out_dir``.

    ``source``: ``mag`` (what ``invert`` wrote), ``mel`` (the mel inverted in memory with
    ``method``, ``invert_weights`` for ``model``: nothing is written to the store), ``true``
    (the true magnitudes of ``extract --with-mag``: phase-only evaluation) or ``auto``
    (default: ``mag`` when ``invert`` has run, else ``mel``).

    ``project``: ``mag`` holds the store's magnitudes fixed; ``mel`` refines them within the
    store's mel while iterating (joint mel inversion; ``algo="admm"`` always does); ``auto``
    (default): ``mel`` unless the config's frames overlap by less than 75 %, or ``source`` is
    ``true`` (phase-only evaluation) or the algorithm is ``degli``.
    ``n_iter``: default by route (:data:`DEFAULT_ITERS`). ``momentum``: FGLA's (fgla, the
    warm-up of degli); ``weights``, ``warmup``: DeGLI's (:class:`AlgoOptions`).
    ``threads``: torch threads per worker (default: cores / workers). A resume keeps the wavs
    only when the store and every setting match the run that wrote them (``out_dir``'s run
    record); ``overwrite`` removes this run's wavs first, and nothing else.
    """
    t0 = time.perf_counter()
    options = AlgoOptions(momentum=momentum, weights=weights, warmup=warmup)
    extra = options.for_algo(algo)
    check_route(algo, project, None)
    if init not in INITS:
        raise UsageError(f"unknown initial phase {init!r}: choose one of {', '.join(INITS)}")
    if source not in (*SOURCES, "auto"):
        raise UsageError(f"unknown source {source!r}: auto, mag (written by invert), mel "
                         "(inverted in memory) or true")
    store = Store(store_path)
    source = resolve_source(source, store)
    if source == "mel":
        if method not in METHODS:
            raise UsageError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
        if method == "model":
            from pipeline.io.weights import pick_for
            from pipeline.models.inverter import inverter_digest, load_invert_model
            invert_weights = invert_weights or pick_for(store.config, "PInvConvSkip")
            load_invert_model(invert_weights, store.config)   # fail early, naming the field
            in_memory = {"method": method, "weights": invert_weights,
                         "weights_sha256": inverter_digest(invert_weights)}
        else:
            in_memory = {"method": method}
    check_route(algo, project, store.config)
    project = resolve_project(project, store.config, algo, source)
    if n_iter is None:
        n_iter = default_iters(algo, project, store.config)
    marker = "mag" if source == "mag" else "extract"
    missing = store.incomplete(marker)
    if missing:
        step = "pipeline invert" if source == "mag" else "pipeline extract --with-mag"
        raise UsageError(f"{store_path}: {len(missing)} shard(s) have no complete "
                         f"'{SOURCES[source]}' yet; run `{step}` first")
    if algo == "degli":
        from pipeline.models.degli import load_degli
        net = load_degli(extra.get("weights"), store.config)   # fail early, before any work
        if net.hparams.magnitude == "model" and source == "true":
            raise UsageError(f"DeGLI weights {extra.get('weights') or '(default)'} were trained "
                             f"for the magnitudes of {net.hparams.invert_weights}, not true ones: "
                             "use --source mag after `pipeline invert --method model`, or "
                             "phase-only weights (`pipeline train degli` without --after-model)")
        if net.hparams.magnitude == "model" and source == "mel":
            raise UsageError("DeGLI weights trained --after-model need the magnitudes of "
                             f"{net.hparams.invert_weights} in the store: run `pipeline invert "
                             "--method model` first")
        if net.hparams.magnitude == "model":
            _check_inverter(store, extra.get("weights"), net.hparams.invert_weights)
    if source == "true" and any(not store.shard_attrs(n).get("with_mag", True)
                                for n in store.shard_names()):
        raise UsageError(f"{store_path}: no true magnitudes (extracted without --with-mag): "
                         "use --source mag, or re-extract with --with-mag")
    out = Path(out_dir)
    check_writable(out)
    for stale in out.rglob(".tmp-*.wav"):     # left by a run killed mid-write
        stale.unlink(missing_ok=True)
    mags = ({"in_memory": in_memory} if source == "mel" else
            {n: {k: v for k, v in store.shard_attrs(n).get("mag", {}).items()
                 if k in ("method", "weights", "weights_sha256")} for n in store.shard_names()})
    record = {"stage": "phase", "store": str(Path(store_path).resolve()),
              "store_created": store.root.attrs.get("created"), "magnitudes": mags,
              "algo": algo, "iters": n_iter, "source": source, "init": init, "project": project,
              "seed": seed, "options": {k: v for k, v in sorted(extra.items())}}
    entries = store.all_entries()
    claim_output(out, record, [wav_path(out, e.id) for e in entries], overwrite,
                 sources=[e.source for e in entries])
    workers = workers_for(device, workers)
    threads = threads or threads_per_worker(workers, cluster, profile)
    batch_frames = batch_frames or phase_batch_frames(resolve_device(device))
    job = PhaseJob(str(store_path), str(out), algo, n_iter, source, init, device, batch_frames,
                   threads, seed, options, project, method, invert_weights)
    tasks, todo = plan_tasks(store, job, workers)
    started = {name for (name, _), _ in tasks}
    res = StageResult(store=out, skipped_shards=len(store.shard_names()) - len(started))
    run_stage(phase_shard, tasks, res, stage="phase",
              items_of=lambda key: part_items(store, key, batch_frames), label=_task_label,
              failures_csv=out / "failures.csv", desc=f"phase ({algo}, {n_iter} it), utterances",
              t0=t0, workers=workers, cluster=cluster, profile=profile, progress=progress,
              sizes=todo)
    return res
