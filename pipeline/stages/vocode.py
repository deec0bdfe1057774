"""``pipeline vocode``: TTS mels -> wavs, = invert + phase without a store.

Mels come as the toolkits write them (:mod:`pipeline.io.mels`): a folder of ``.npy``,
``.npz``, ``.pt`` or ``.h5`` files, a ``feats.scp`` (ESPnet's npy paths or Kaldi ark
offsets), a bare ``.ark``; shaped ``(n_mels, T)``, ``(1, n_mels, T)``, ``(1, T, n_mels)`` or
``(T, n_mels)``. Every file is checked against the declared convention
(shape, dtype, value range of the log scale) before any work; a file that contradicts it is an
error that names the file and what to change. The report CSV has a round-trip check: the mel
re-extracted from the output with the same convention, compared with the input.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from pipeline.config import AudioConfig
from pipeline.dsp.mel import compress, mel_spectrogram
from pipeline.io.audio import AudioFormat, clipped_ids, file_level, write_wav
from pipeline.io.manifest import check_id, write_output_lists
from pipeline.io.mels import MelError, MelStats, find_mels, load_stats, mel_shape, read_mel
from pipeline.io.results import Failure, StageResult, check_writable, claim_output, write_report
from pipeline.parallel.batching import resolve_device, workers_for
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
    resolve_tol,
)


@dataclass
class VocodeResult(StageResult):
    """A stage result (``store`` is the output folder) with the round-trip report."""
    skipped: int = 0
    mel_l1_mean: float = math.nan


def expected_range(cfg: AudioConfig) -> tuple[float, float]:
    """Plausible (min, max) of compressed mel values under ``cfg`` (with a margin)."""
    lo = float(compress(torch.tensor(cfg.clamp), cfg))
    hi = float(compress(torch.tensor(1e4 if cfg.power == 1 else 1e8), cfg))
    margin = 0.05 * (hi - lo) if cfg.log != "none" else 0.0
    return lo - margin, hi


def looks_normalised(a: np.ndarray, cfg: AudioConfig) -> str | None:
    """Why the mel ``[T, n_mels]`` looks rescaled rather than compressed as ``cfg`` says, or
    None. Mean-variance normalised features (ESPnet global_mvn, ParallelWaveGAN) have a mean
    near 0, a unit spread and every mel's own mean near 0, where a log-mel of speech has
    mels several units apart (the quiet high bands far below the loud low ones). Mels
    rescaled and clipped (Tacotron's symmetric +-4) pile up at a bound that is not the
    convention's floor."""
    if a.shape[0] < SPREAD_FRAMES or cfg.log == "none":
        return None
    mean, std = float(a.mean()), float(a.std())
    per_mel = np.abs(a.mean(0))
    if abs(mean) < 1.0 and 0.5 < std < 1.6 and float(per_mel.max()) < 2.0:
        return (f"mean {mean:.2f}, standard deviation {std:.2f} and every mel's mean within "
                f"{float(per_mel.max()):.2f} of 0: mean-variance normalised features")
    lo = float(a.min())
    floor = float(compress(torch.tensor(cfg.clamp), cfg))
    if float(np.mean(a == lo)) >= 0.005 and abs(lo - floor) > 0.05 * max(1.0, abs(floor)):
        return (f"{100 * float(np.mean(a == lo)):.1f} % of the values sit at {lo:.2f}, a clip "
                f"that is not this convention's floor ({floor:.2f} for clamp={cfg.clamp:g}): "
                "rescaled features (e.g. Tacotron's symmetric +-4 normalisation)")
    return None


def load_mel(source: str | Path, cfg: AudioConfig, square: str | None = None) -> np.ndarray:
    """Read and check one mel file; returns ``[T, n_mels]`` float32 (compressed as ``cfg``).

    A 2-D array with ``T == n_mels`` is read as ``square`` says (``"mels-first"``:
    ``(n_mels, T)``, ``"frames-first"``: ``(T, n_mels)``; the layout of the other files of
    the run, see :func:`square_layout`), and refused when nothing says."""
    return _check_mel(source, read_mel(str(source)), cfg, square)


def _check_mel(path: str | Path, a: np.ndarray, cfg: AudioConfig, square: str | None = None,
               stats: MelStats | None = None) -> np.ndarray:
    if a.dtype.kind in "iub":
        raise MelError(f"{path}: mel has integer dtype {a.dtype}; mels are float (log-)magnitudes. "
                       "Convert the file (was it quantised?) before vocoding")
    batched = a.ndim == 3 and a.shape[0] == 1
    if batched:
        a = a[0]              # (1, n_mels, T): the layout is explicit, whatever T is
    if a.ndim != 2:
        raise MelError(f"{path}: mel shape {a.shape}; expected (n_mels, T), (1, n_mels, T) or "
                       f"(T, n_mels) with n_mels={cfg.n_mels}")
    M = cfg.n_mels
    if batched and a.shape[0] != M and a.shape[1] == M:
        a = a.T               # (1, T, n_mels): a batch of one, frames first
        batched = False
    if batched and a.shape[0] != M:
        raise MelError(f"{path}: mel shape (1, {a.shape[0]}, {a.shape[1]}) has {a.shape[0]} mels, "
                       f"not n_mels={M} (preset {cfg.name}); pass --n-mels {a.shape[0]} or the "
                       "right --preset")
    if a.shape[0] == M and a.shape[1] == M and not batched:
        if square is None:
            raise MelError(f"{path}: shape {a.shape} is ambiguous (T == n_mels == {M}) and no "
                           "other file of this run shows the layout; save it as (1, n_mels, T)")
        if square == "frames-first":
            a = a.T
    if a.shape[0] == M:
        a = a.T
    elif a.shape[1] != M:
        raise MelError(f"{path}: mel shape {a.shape} has no axis of n_mels={M} "
                       f"(preset {cfg.name}); pass --n-mels {min(a.shape)} or the right --preset")
    if a.shape[0] < 2:
        raise MelError(f"{path}: only {a.shape[0]} frame(s)")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise MelError(f"{path}: mel contains NaN or Inf values")
    if stats is not None:
        a = stats.denormalise(a)
    else:
        why = looks_normalised(a, cfg)
        if why:
            raise MelError(f"{path}: {why}, not {cfg.log} mels (preset {cfg.name}): give the "
                           "statistics they were normalised with (--stats feats_stats.npz, as "
                           "ESPnet writes it, or a stats .npy of mean and scale), or "
                           "denormalise them first")
    lo, hi = expected_range(cfg)
    mn, mx = float(a.min()), float(a.max())
    narrow = cfg.log == "db" and mx - mn < 25      # a dB mel of speech spans far more than 25 dB
    if mn < lo - 1e-3 or mx > hi or narrow:
        hint = _guess_log(mn, mx)
        raise MelError(f"{path}: values in [{mn:.2f}, {mx:.2f}] do not fit log={cfg.log!r} with "
                       f"clamp={cfg.clamp:g} (expected within [{lo:.2f}, {hi:.2f}])"
                       + (f"; they look like {hint}: pass --log {hint.split()[0]} or the matching "
                          "--preset" if hint else "; check --log and --clamp"))
    _check_spread(path, a, cfg)
    return a


# The spread (99th - 5th percentile) of speech mels in each log scale, measured on the test
# corpus, 12 asterisk prompts and the same at -26 dB (benchmarks/checks/mel_spread.py): ln
# magnitude mels 6.7-9.9 nepers, log10 ones 2.9-4.3 decades (the same audio: ln = 2.30 log10).
# A file of at least SPREAD_FRAMES frames whose spread lies on the other scale's side of the
# gap was made with the other log: vocoded as declared it comes out at PESQ ~1.0.
SPREAD_FRAMES = 50
SPREAD_GAP = {"ln": (5.2, "log10", "espnet-22k"), "log10": (5.8, "ln", "hifigan-22k")}


def _check_spread(path: str | Path, a: np.ndarray, cfg: AudioConfig) -> None:
    if cfg.log not in SPREAD_GAP or cfg.power != 1 or a.shape[0] < SPREAD_FRAMES:
        return
    top = float(np.percentile(a, 99))
    spread = top - float(np.percentile(a, 5))
    limit, other, preset = SPREAD_GAP[cfg.log]
    if cfg.log == "ln" and top - float(compress(torch.tensor(cfg.clamp), cfg)) < limit:
        return    # near-silent: even its loud values lie within the gap of the floor, so its
        #           spread says nothing of the log scale (the tool's own quiet mels vocode)
    if (cfg.log == "ln" and spread < limit) or (cfg.log == "log10" and spread > limit):
        raise MelError(f"{path}: values spread over {spread:.2f} (99th - 5th percentile), as "
                       f"{other} mels of speech do, not {cfg.log} ones (log={cfg.log!r}, preset "
                       f"{cfg.name}); pass --preset {preset} or --log {other}")


def layout_of(shape: tuple[int, ...], n_mels: int) -> str | None:
    """``mels-first`` / ``frames-first`` for a 2-D mel shape that tells, else None."""
    if len(shape) != 2 or shape[0] == shape[1]:
        return None
    return "mels-first" if shape[0] == n_mels else "frames-first" if shape[1] == n_mels else None


def square_layout(shapes: list[tuple[int, ...]], n_mels: int) -> str | None:
    """The layout of a run's non-square 2-D mels, when they all agree (else None)."""
    seen = {layout_of(s, n_mels) for s in shapes} - {None}
    return seen.pop() if len(seen) == 1 else None


def _guess_log(mn: float, mx: float) -> str:
    if mn >= 0 and mx > 1:
        return "none (linear mel)"
    if mn < -20 and mx <= 40:
        return "db (decibels)"
    if -6 <= mn and mx < 5:
        return "log10"
    if -14 <= mn and mx < 8:
        return "ln (natural log)"
    return ""


@dataclass(frozen=True)
class VocodeJob:
    """What every task of one ``vocode`` run shares (sent to the workers with its files)."""
    out_dir: str
    cfg: dict
    inverter: Inverter
    algo: str
    n_iter: int
    project: str = "auto"
    device: str = "cpu"
    threads: int = 1
    batch_frames: int | None = None
    layout_hint: str | None = None
    stats: MelStats | None = None
    peak_dbfs: float | None = None
    fmt: AudioFormat = AudioFormat()
    tol: float = 0.0


def vocode_files(items: list[tuple[str, str]], job: VocodeJob) -> dict:
    """Worker task: check, invert, reconstruct, write and round-trip a list of (id, path):
    the round trip re-extracts the mel from the file as written (16-bit, clipped)."""
    torch.set_num_threads(job.threads)
    cfg = AudioConfig.from_dict(job.cfg)
    dev = resolve_device(job.device)
    model = None
    if job.inverter.method == "model":
        from pipeline.models.inverter import shared_invert_model
        model = shared_invert_model(job.inverter.weights, cfg, dev)
    rows: list[dict] = []
    failures, mels, ids, raw = [], [], [], []
    for uid, path in items:
        try:
            raw.append((uid, path, read_mel(path)))
        except MelError as exc:
            failures.append(Failure(uid, path, "vocode", str(exc)))
    square = square_layout([a.shape for _, _, a in raw], cfg.n_mels) or job.layout_hint
    for uid, path, a in raw:
        try:
            mels.append(_check_mel(path, a, cfg, square, job.stats))
            ids.append((uid, path))
        except MelError as exc:
            failures.append(Failure(uid, path, "vocode", str(exc)))
    if not mels:
        return {"n": 0, "seconds": 0.0, "rows": rows, "failures": failures}
    sizes = {"batch_frames": job.batch_frames} if job.batch_frames else {}   # else each stage's default
    mags = invert_frames(mels, cfg, job.inverter.method, model=model, device=dev, **sizes)  # type: ignore[arg-type]
    lengths = [cfg.n_samples(m.shape[0]) for m in mels]
    ran: list[int] = []
    waves = reconstruct(mags, lengths, cfg, job.algo, n_iter=job.n_iter, device=dev,
                        project=job.project, mels=mels, options=AlgoOptions(tol=job.tol),
                        iterations=ran, **sizes)  # type: ignore[arg-type]
    for (uid, path), mel, y, n in zip(ids, mels, waves, ran):
        wav = Path(job.out_dir) / f"{uid}{job.fmt.suffix}"
        level = write_wav(wav, y, cfg.sample_rate, job.peak_dbfs, job.fmt)
        rows.append({"id": uid, "source": path, "n_frames": mel.shape[0],
                     "seconds": round(len(y) / cfg.sample_rate, 4),
                     "roundtrip_mel_l1": roundtrip_l1(wav, mel, cfg),
                     "peak_dbfs": round(level.peak_dbfs, 2), "clipped": round(level.clipped, 6),
                     "gain_db": round(level.gain_db, 2), "iterations": n})
    return {"n": len(rows), "seconds": sum(r["seconds"] for r in rows), "rows": rows,
            "failures": failures}


def roundtrip_l1(wav: Path, mel: np.ndarray, cfg: AudioConfig) -> float:
    """Mean ``|mel(file) - mel|`` in the convention's log units: the mel re-extracted from the
    wav as written (16-bit, clipped), against the input mel ``[T, n_mels]``."""
    y, _ = sf.read(str(wav), dtype="float32")
    with torch.inference_mode():
        again = mel_spectrogram(torch.from_numpy(y)[None], cfg)[0].T.numpy()
    T = min(len(again), len(mel))
    return float(np.abs(again[:T] - mel[:T]).mean())


def vocode(src: str | Path, out: str | Path, cfg: AudioConfig, *, method: str = "pinv",
           weights: str | None = None, algo: str = "fgla", n_iter: int | None = None,
           device: str = "auto", workers: int = 1, files_per_task: int = 16,
           batch_frames: int | None = None, progress: bool = True, project: str = "auto",
           overwrite: bool = False, stats: str | Path | None = None,
           peak_dbfs: float | None = None, audio_format: str = "wav",
           subtype: str = "PCM_16", tol: float | None = None) -> VocodeResult:
    """Vocode every mel under ``src`` into ``out/<id>.wav``; existing wavs are kept (resume).

    ``project="mel"``: the phase iterations refine the inverted magnitude within the input
    mel (joint mel inversion); ``"mag"`` holds it fixed; ``"auto"``: ``mel`` for frames that
    overlap by >= 75 % (:func:`pipeline.stages.phase.resolve_project`). A resume keeps the wavs
    only when the input folder and every setting match the run that wrote them; ``overwrite``
    removes this run's wavs first, and nothing else. ``stats``: the normalisation statistics
    of normalised features (:func:`load_stats`; without them such mels are refused).
    ``peak_dbfs``: each output scaled to that peak; the report lists every output's level.
    ``audio_format``, ``subtype``: how outputs are written (:class:`AudioFormat`); ``out``'s
    ``wav.scp`` and ``manifest.jsonl`` list them. ``tol``: stop each converged item of joint
    mel inversion (``n_iter`` a maximum; the report lists the iterations each took; default:
    :func:`pipeline.synthesis.resolve_tol`)."""
    t0 = time.perf_counter()
    fmt = AudioFormat(audio_format, subtype)
    check_route(algo, project, cfg)
    if n_iter is None:
        n_iter = default_iters(algo, project, cfg)
    tol = resolve_tol(tol, algo, project, cfg)
    inverter = resolve_inverter(method, weights, cfg)
    mel_stats = load_stats(stats, cfg.n_mels) if stats is not None else None
    if algo == "degli":
        from pipeline.models.degli import load_degli
        load_degli(None, cfg)                    # fail early: no DeGLI weights for this preset
    items = find_mels(src)
    unsafe = [Failure(u, p, "vocode", f"{p}: id {u!r} {why}; ids become file names under --out")
              for u, p in items if (why := check_id(u))]
    items = [(u, p) for u, p in items if not check_id(u)]
    by_id: dict[str, list[str]] = {}
    for u, p in items:
        by_id.setdefault(u, []).append(p)
    clash = [Failure(u, p, "vocode", f"{p}: id {u!r} is also the id of "
                     f"{', '.join(q for q in ps if q != p)}; both would write {u}.wav: "
                     "rename one") for u, ps in by_id.items() if len(ps) > 1 for p in ps]
    items = [(u, p) for u, p in items if len(by_id[u]) == 1]
    out = Path(out)
    check_writable(out)
    record = {"stage": "vocode", "source": str(Path(src).resolve()), "audio": cfg.to_dict(),
              **inverter.record(), "algo": algo, "iters": n_iter, "project": project,
              **({"stats": mel_stats.path, "stats_sha256": mel_stats.sha256} if mel_stats else {}),
              **({"peak_dbfs": peak_dbfs} if peak_dbfs is not None else {}),
              **({"tol": tol} if tol else {}), **fmt.record()}
    claim_output(out, record, [out / f"{u}{fmt.suffix}" for u, _ in items], overwrite)
    todo = [(u, p) for u, p in items if not (out / f"{u}{fmt.suffix}").exists()]
    res = VocodeResult(store=out, skipped=len(items) - len(todo), failures=unsafe + clash)
    hint = square_layout([mel_shape(p) for _, p in items], cfg.n_mels)
    workers = workers_for(device, workers)
    threads = threads_per_worker(workers)
    job = VocodeJob(str(out), cfg.to_dict(), inverter, algo, n_iter, project, device, threads,
                    batch_frames, hint, mel_stats, peak_dbfs, fmt, tol)
    tasks = [(k, (todo[k:k + files_per_task], job)) for k in range(0, len(todo), files_per_task)]
    results = run_stage(
        vocode_files, tasks, res, stage="vocode", failures_csv=out / "failures.csv",
        desc=f"vocode ({method}+{algo})", t0=t0, workers=workers, progress=progress,
        items_of=lambda k: [{"id": u, "path": p} for u, p in todo[k:k + files_per_task]],
        label=lambda k: f"files {k + 1}-{min(k + files_per_task, len(todo))}")
    rows = [row for r in results if not r.error for row in r.value["rows"]]

    def level_only(uid: str) -> dict | None:      # an output of an earlier run with no row
        wav = out / f"{uid}{fmt.suffix}"
        if not wav.exists():
            return None
        lv = file_level(wav)
        return {"id": uid, "source": "", "n_frames": "", "seconds": round(sf.info(str(wav)).duration, 4),
                "roundtrip_mel_l1": "nan", "peak_dbfs": round(lv.peak_dbfs, 2),
                "clipped": round(lv.clipped, 6), "gain_db": 0.0}

    res.report, all_rows = write_report(out / "vocode-report.csv", rows, [u for u, _ in items],
                                        level_only)
    l1 = [float(r["roundtrip_mel_l1"]) for r in all_rows]
    res.mel_l1_mean = float(np.nanmean(l1)) if l1 and not np.isnan(l1).all() else math.nan
    res.clipped = clipped_ids(all_rows)
    write_output_lists(out, [(u, out / f"{u}{fmt.suffix}") for u, _ in items])
    return res
