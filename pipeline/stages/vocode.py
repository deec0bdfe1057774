"""``pipeline vocode``: a folder (or file) of TTS mels -> wavs, = invert + phase without a store.

Mels are ``.npy``, ``.npz`` (one array, or key ``mel``/``feats``) or ``.pt`` (a tensor, or a
dict with key ``mel``; loaded with ``weights_only=True``), shaped ``(n_mels, T)``,
``(1, n_mels, T)`` or ``(T, n_mels)``. Every file is checked against the declared convention
(shape, dtype, value range of the log scale) before any work; a file that contradicts it is an
error that names the file and what to change. The report CSV has a round-trip check: the mel
re-extracted from the output with the same convention, compared with the input.
"""
from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.config import AudioConfig
from pipeline.dsp.mel import compress, mel_spectrogram
from pipeline.errors import PipelineError
from pipeline.io.audio import write_wav
from pipeline.io.results import Failure, StageResult, check_writable, claim_output
from pipeline.parallel.batching import resolve_device, workers_for
from pipeline.parallel.tasks import threads_per_worker
from pipeline.stages._runner import run_stage
from pipeline.synthesis import check_route, default_iters, invert_frames, reconstruct, resolve_inverter

MEL_EXTENSIONS = (".npy", ".npz", ".pt")


class MelError(PipelineError, ValueError):
    """A mel file contradicts the declared convention; the message says what to change."""


@dataclass
class VocodeResult(StageResult):
    """A stage result (``store`` is the output folder) with the round-trip report."""
    skipped: int = 0
    report: Path | None = None
    mel_l1_mean: float = math.nan


_MAGIC = {".npy": (b"\x93NUMPY", "numpy.save"), ".npz": (b"PK", "numpy.savez")}


def _read_array(path: Path) -> np.ndarray:
    try:
        suffix = path.suffix.lower()
        if suffix in _MAGIC:
            magic, writer = _MAGIC[suffix]
            with open(path, "rb") as fh:
                if fh.read(len(magic)) != magic:   # numpy would call it pickled data
                    raise MelError(f"{path}: not a {suffix} file (no {suffix} header): "
                                   f"write mels with {writer}")
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                key = next((k for k in ("mel", "feats", "spec") if k in keys), None)
                if key is None and len(keys) == 1:
                    key = keys[0]
                if key is None:
                    raise MelError(f"{path}: .npz holds {keys}; store one array or name it 'mel'")
                return z[key]
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict):
            obj = obj.get("mel", obj.get("feats"))
        if not isinstance(obj, torch.Tensor):
            raise MelError(f"{path}: .pt must hold a tensor or a dict with key 'mel'")
        return obj.float().numpy() if obj.is_floating_point() else obj.numpy()
    except MelError:
        raise
    except Exception as exc:  # damaged file, pickle refused, wrong format
        raise MelError(f"{path}: cannot read mel ({type(exc).__name__}: {exc})") from exc


def expected_range(cfg: AudioConfig) -> tuple[float, float]:
    """Plausible (min, max) of compressed mel values under ``cfg`` (with a margin)."""
    lo = float(compress(torch.tensor(cfg.clamp), cfg))
    hi = float(compress(torch.tensor(1e4 if cfg.power == 1 else 1e8), cfg))
    margin = 0.05 * (hi - lo) if cfg.log != "none" else 0.0
    return lo - margin, hi


def load_mel(path: str | Path, cfg: AudioConfig, square: str | None = None) -> np.ndarray:
    """Read and check one mel file; returns ``[T, n_mels]`` float32 (compressed as ``cfg``).

    A 2-D array with ``T == n_mels`` is read as ``square`` says (``"mels-first"``:
    ``(n_mels, T)``, ``"frames-first"``: ``(T, n_mels)``; the layout of the other files of
    the run, see :func:`square_layout`), and refused when nothing says."""
    return _check_mel(path, _read_array(Path(path)), cfg, square)


def _check_mel(path: str | Path, a: np.ndarray, cfg: AudioConfig, square: str | None = None
               ) -> np.ndarray:
    path = Path(path)
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


def _check_spread(path: Path, a: np.ndarray, cfg: AudioConfig) -> None:
    if cfg.log not in SPREAD_GAP or cfg.power != 1 or a.shape[0] < SPREAD_FRAMES:
        return
    spread = float(np.percentile(a, 99) - np.percentile(a, 5))
    limit, other, preset = SPREAD_GAP[cfg.log]
    if (cfg.log == "ln" and spread < limit) or (cfg.log == "log10" and spread > limit):
        raise MelError(f"{path}: values spread over {spread:.2f} (99th - 5th percentile), as "
                       f"{other} mels of speech do, not {cfg.log} ones (log={cfg.log!r}, preset "
                       f"{cfg.name}); pass --preset {preset} or --log {other}")


def layout_of(shape: tuple[int, ...], n_mels: int) -> str | None:
    """``mels-first`` / ``frames-first`` for a 2-D mel shape that tells, else None."""
    if len(shape) != 2 or shape[0] == shape[1]:
        return None
    return "mels-first" if shape[0] == n_mels else "frames-first" if shape[1] == n_mels else None


def mel_shape(path: Path) -> tuple[int, ...]:
    """A mel file's array shape (a ``.npy`` header only), ``()`` when unreadable."""
    try:
        if path.suffix.lower() == ".npy":
            return tuple(np.load(path, mmap_mode="r", allow_pickle=False).shape)
        a = _read_array(path)
        return tuple(a.shape[1:] if a.ndim == 3 and a.shape[0] == 1 else a.shape)
    except (MelError, OSError, ValueError):
        return ()


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


def find_mels(src: str | Path) -> tuple[list[tuple[str, Path]], Path]:
    src = Path(src)
    if src.is_file():
        return [(src.stem, src)], src.parent
    if not src.is_dir():
        raise MelError(f"{src}: no such file or folder")
    files = sorted(p for p in src.rglob("*") if p.suffix.lower() in MEL_EXTENSIONS and p.is_file())
    if not files:
        raise MelError(f"{src}: no mel files ({', '.join(MEL_EXTENSIONS)}) found")
    return [(p.relative_to(src).with_suffix("").as_posix(), p) for p in files], src


def vocode_files(items: list[tuple[str, str]], out_dir: str, cfg_dict: dict, method: str,
                 weights: str | None, algo: str, n_iter: int, device: str, threads: int,
                 batch_frames: int | None, project: str = "auto",
                 layout_hint: str | None = None) -> dict:
    """Worker task: check, invert, reconstruct and round-trip a list of (id, path)."""
    torch.set_num_threads(threads)
    cfg = AudioConfig.from_dict(cfg_dict)
    dev = resolve_device(device)
    model = None
    if method == "model":
        from pipeline.models.inverter import shared_invert_model
        model = shared_invert_model(weights, cfg, dev)
    rows: list[dict] = []
    failures, mels, ids, raw = [], [], [], []
    for uid, path in items:
        try:
            raw.append((uid, path, _read_array(Path(path))))
        except MelError as exc:
            failures.append(Failure(uid, path, "vocode", str(exc)))
    square = square_layout([a.shape for _, _, a in raw], cfg.n_mels) or layout_hint
    for uid, path, a in raw:
        try:
            mels.append(_check_mel(path, a, cfg, square))
            ids.append((uid, path))
        except MelError as exc:
            failures.append(Failure(uid, path, "vocode", str(exc)))
    if not mels:
        return {"n": 0, "seconds": 0.0, "rows": rows, "failures": failures}
    sizes = {"batch_frames": batch_frames} if batch_frames else {}   # else each stage's default
    mags = invert_frames(mels, cfg, method, model=model, device=dev, **sizes)  # type: ignore[arg-type]
    lengths = [cfg.n_samples(m.shape[0]) for m in mels]
    waves = reconstruct(mags, lengths, cfg, algo, n_iter=n_iter, device=dev, project=project,
                        mels=mels, **sizes)  # type: ignore[arg-type]
    for (uid, path), mel, y in zip(ids, mels, waves):
        write_wav(Path(out_dir) / f"{uid}.wav", y, cfg.sample_rate)
        with torch.inference_mode():
            again = mel_spectrogram(torch.from_numpy(y)[None], cfg)[0].T.numpy()
        T = min(len(again), len(mel))
        rows.append({"id": uid, "source": path, "n_frames": mel.shape[0],
                     "seconds": round(len(y) / cfg.sample_rate, 4),
                     "roundtrip_mel_l1": float(np.abs(again[:T] - mel[:T]).mean())})
    return {"n": len(rows), "seconds": sum(r["seconds"] for r in rows), "rows": rows,
            "failures": failures}


def vocode(src: str | Path, out: str | Path, cfg: AudioConfig, *, method: str = "pinv",
           weights: str | None = None, algo: str = "fgla", n_iter: int | None = None,
           device: str = "auto", workers: int = 1, files_per_task: int = 16,
           batch_frames: int | None = None, progress: bool = True, project: str = "auto",
           overwrite: bool = False) -> VocodeResult:
    """Vocode every mel under ``src`` into ``out/<id>.wav``; existing wavs are kept (resume).

    ``project="mel"``: the phase iterations refine the inverted magnitude within the input
    mel (joint mel inversion); ``"mag"`` holds it fixed; ``"auto"``: ``mel`` for frames that
    overlap by >= 75 % (:func:`pipeline.stages.phase.resolve_project`). A resume keeps the wavs
    only when the input folder and every setting match the run that wrote them; ``overwrite``
    removes this run's wavs first, and nothing else."""
    t0 = time.perf_counter()
    check_route(algo, project, cfg)
    if n_iter is None:
        n_iter = default_iters(algo, project, cfg)
    inverter = resolve_inverter(method, weights, cfg)
    weights = inverter.weights
    if algo == "degli":
        from pipeline.models.degli import load_degli
        load_degli(None, cfg)                    # fail early: no DeGLI weights for this preset
    items, _ = find_mels(src)
    by_id: dict[str, list[Path]] = {}
    for u, p in items:
        by_id.setdefault(u, []).append(p)
    clash = [Failure(u, str(p), "vocode", f"{p}: id {u!r} is also the id of "
                     f"{', '.join(str(q) for q in ps if q != p)}; both would write {u}.wav: "
                     "rename one") for u, ps in by_id.items() if len(ps) > 1 for p in ps]
    items = [(u, p) for u, p in items if len(by_id[u]) == 1]
    out = Path(out)
    check_writable(out)
    record = {"stage": "vocode", "source": str(Path(src).resolve()), "audio": cfg.to_dict(),
              **inverter.record(), "algo": algo, "iters": n_iter, "project": project}
    claim_output(out, record, [out / f"{u}.wav" for u, _ in items], overwrite)
    todo = [(u, str(p)) for u, p in items if not (out / f"{u}.wav").exists()]
    res = VocodeResult(store=out, skipped=len(items) - len(todo), failures=clash)
    hint = square_layout([mel_shape(Path(p)) for _, p in items], cfg.n_mels)
    workers = workers_for(device, workers)
    threads = threads_per_worker(workers)
    tasks = [(k, (todo[k:k + files_per_task], str(out), cfg.to_dict(), method, weights, algo,
                  n_iter, device, threads, batch_frames, project, hint))
             for k in range(0, len(todo), files_per_task)]
    results = run_stage(
        vocode_files, tasks, res, stage="vocode", failures_csv=out / "failures.csv",
        desc=f"vocode ({method}+{algo})", t0=t0, workers=workers, progress=progress,
        items_of=lambda k: [{"id": u, "path": p} for u, p in todo[k:k + files_per_task]],
        label=lambda k: f"files {k + 1}-{min(k + files_per_task, len(todo))}")
    rows = sorted((row for r in results if not r.error for row in r.value["rows"]),
                  key=lambda r: r["id"])
    if rows:
        res.mel_l1_mean = float(np.mean([r["roundtrip_mel_l1"] for r in rows]))
        res.report = out / "vocode-report.csv"
        with res.report.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return res
