"""``pipeline score``: pair reference and reconstructed audio by utterance id, compute metrics.

References are a wav folder (ids = relative paths without extension) or a store (its
utterances' source files, read at the store's sample rate). Writes a per-utterance CSV, a
summary CSV (``*.summary.csv``) and returns a Markdown table.
"""
from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import InputError, UsageError
from pipeline.io.audio import AudioError, load
from pipeline.io.manifest import scan_folder, utterance_id
from pipeline.metrics.registry import METRICS, MetricError, default_metrics
from pipeline.parallel.tasks import run_tasks

LENGTH_TOLERANCE_S = 0.05
# A hypothesis whose energy envelope matches its reference's best this far from lag 0,
# clearly better than at lag 0, is delayed (or advanced): scored unaligned, STOI falls from
# 0.98 to 0.4 at 40 ms. Flagged, or aligned with --align (as VERSA's and ESPnet's scoring do).
# The envelope, not the waveform: a phase reconstruction's samples need not correlate with the
# reference's at all (its phase is its own), its energy over time must.
LAG_TOLERANCE_S = 0.005
MAX_LAG_S = 0.5
LAG_WINDOW_S = 30.0


def _envelope(y: np.ndarray, sample_rate: int) -> np.ndarray:
    """Log energy over 4 ms windows every 1 ms (floored 60 dB below its peak, so digital
    silence weighs no more than a quiet pause), mean removed."""
    hop = max(1, sample_rate // 1000)
    e = np.convolve(y.astype(np.float64) ** 2, np.ones(4 * hop) / (4 * hop), mode="same")[::hop]
    e = np.log(e + e.max() * 1e-6 + 1e-12)
    return e - e.mean()


def find_lag(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> int:
    """The lag (samples; > 0: the estimate is late) of the estimate against the reference:
    the cross-correlation of their energy envelopes (first ``LAG_WINDOW_S`` seconds, within
    ``+-MAX_LAG_S``, 1 ms steps), then refined to the sample by the waveforms' correlation
    within a millisecond of it; 0 unless the envelope's peak is at least ``LAG_TOLERANCE_S``
    away and clearly (3 %) above its zero-lag value (delays of 40 ms: 7-77 % above;
    reconstructions of the test corpus at 5 iterations: < 0.5 %, within 4 ms)."""
    from scipy.signal import correlate

    n = int(LAG_WINDOW_S * sample_rate)
    r, e = reference[:n], estimate[:n]
    if not r.any() or not e.any():
        return 0
    hop = max(1, sample_rate // 1000)
    c = correlate(_envelope(e, sample_rate), _envelope(r, sample_rate), mode="full", method="fft")
    zero = len(_envelope(r, sample_rate)) - 1
    m = int(MAX_LAG_S * 1000)
    lo, hi = max(0, zero - m), min(len(c), zero + m + 1)
    best = lo + int(np.argmax(c[lo:hi]))
    if abs(best - zero) * hop < LAG_TOLERANCE_S * sample_rate or c[best] < 1.03 * max(c[zero], 1e-9):
        return 0
    coarse = (best - zero) * hop
    # to the sample: the waveforms around the coarse lag (a copy's samples do correlate)
    w = correlate(e.astype(np.float64), r.astype(np.float64), mode="full", method="fft")
    mid = len(r) - 1 + coarse
    a, b = max(0, mid - hop), min(len(w), mid + hop + 1)
    return int(a + np.argmax(np.abs(w[a:b])) - (len(r) - 1))


@dataclass
class ScoreResult:
    rows: list[dict]
    summary: list[dict]
    csv: Path
    summary_csv: Path
    markdown: str
    seconds: float = 0.0
    plots: list[Path] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return sum(1 for r in self.rows if r["error"])


def references(ref: str | Path | None) -> tuple[dict[str, str], int | None]:
    """id -> reference audio path; and the sample rate to read at (a store's, else native)."""
    if ref is None:
        return {}, None
    ref = Path(ref)
    if (ref / "zarr.json").exists():
        from pipeline.io.store import Store
        s = Store(ref)
        return {e.id: e.source for e in s.all_entries()}, s.config.sample_rate
    if ref.is_dir():
        return {utterance_id(p, ref): str(p) for p in scan_folder(ref)}, None
    if ref.is_file() and ref.suffix in (".scp", ".jsonl"):
        return audio_list(ref, "--ref"), None
    raise InputError(f"--ref {ref}: neither a folder of audio, a wav.scp or manifest, nor a "
                     "pipeline store")


def audio_list(path: Path, option: str) -> dict[str, str]:
    """id -> audio path of a Kaldi ``wav.scp`` (plain paths) or a JSONL manifest: what the
    stages write beside their outputs."""
    if path.suffix == ".jsonl":
        from pipeline.io.manifest import read_manifest
        return {u.id: u.path for u in read_manifest(path)}
    from pipeline.io.manifest import read_wav_scp
    return {u.id: u.path for u in read_wav_scp(path)}


def hypotheses(hyp: str | Path) -> dict[str, str]:
    hyp = Path(hyp)
    if hyp.is_file() and hyp.suffix in (".scp", ".jsonl"):
        return audio_list(hyp, "--hyp")
    if not hyp.is_dir():
        raise InputError(f"--hyp {hyp}: not a folder of wavs, a wav.scp or a manifest")
    return {utterance_id(p, hyp): str(p) for p in scan_folder(hyp, (".wav", ".flac"))}


def _native_rate(path: str) -> int:
    from pipeline.io.audio import info
    return info(path)["sample_rate"]


def empty_row(uid: str, ref_path: str | None, hyp_path: str | None, metrics: list[str],
              error: str = "") -> dict:
    """A row with every metric NaN (filled in by :func:`score_one`, or left so with ``error``)."""
    row: dict = {"id": uid, "ref": ref_path or "", "hyp": hyp_path or "", "duration_s": math.nan,
                 "lag_ms": math.nan, **{m: math.nan for m in metrics}}
    if error:
        row["error"] = error
    return row


def score_one(uid: str, ref_path: str | None, hyp_path: str | None, metrics: list[str],
              rate: int | None, align: bool = False) -> dict:
    """One row: every metric or NaN, and the reasons in ``error``. A hypothesis delayed
    against its reference (:func:`find_lag`) is flagged, or with ``align`` shifted into place
    first; ``lag_ms`` reports the lag either way."""
    row = empty_row(uid, ref_path, hyp_path, metrics)
    errors = []
    if hyp_path is None:
        row["error"] = "missing hyp file: no reconstruction for this id"
        return row
    try:
        # With a reference, score at the lower of the two native rates: spectral metrics
        # (LSD, MCD, spectral convergence) never compare the empty band above a 16 kHz
        # reference's Nyquist with a 22.05 kHz output's (PESQ/STOI resample anyway).
        sr = (min(_native_rate(ref_path), _native_rate(hyp_path)) if ref_path else
              rate or _native_rate(hyp_path))
        est = load(hyp_path, sr)
        refy = load(ref_path, sr) if ref_path else None
    except AudioError as exc:
        row["error"] = str(exc)
        return row
    row["duration_s"] = round(len(est) / sr, 4)
    if refy is not None:
        lag = find_lag(refy, est, sr)
        row["lag_ms"] = round(1000 * lag / sr, 2)
        if lag and not align:
            row["error"] = (f"the hypothesis is {'late' if lag > 0 else 'early'} by "
                            f"{abs(row['lag_ms']):g} ms against its reference (scored "
                            "unaligned, every metric would be wrong): pass --align to shift "
                            "it into place")
            return row
        est = est[lag:] if lag > 0 else np.concatenate([np.zeros(-lag, est.dtype), est])
        diff = abs(len(refy) - len(est))
        if diff > LENGTH_TOLERANCE_S * sr:
            row["error"] = (f"length mismatch: ref {len(refy) / sr:.3f} s vs hyp {len(est) / sr:.3f} s "
                            f"(tolerance {LENGTH_TOLERANCE_S} s)")
            return row
        n = min(len(refy), len(est))
        refy, est = refy[:n], est[:n]
    for m in metrics:
        if METRICS[m].intrusive and refy is None:
            errors.append(f"{m}: no reference for this id")
            continue
        try:
            row[m] = METRICS[m].fn(reference=refy, estimate=est, sample_rate=sr)
        except MetricError as exc:
            errors.append(f"{m}: {exc}")
    row["error"] = "; ".join(errors)
    return row


def _score_chunk(items: list[tuple[str, str | None, str | None]], metrics: list[str],
                 rate: int | None, align: bool = False) -> list[dict]:
    import torch
    torch.set_num_threads(1)
    rows = []
    for uid, r, h in items:
        try:
            rows.append(score_one(uid, r, h, metrics, rate, align))
        except Exception as exc:  # an unexpected bug in one item is reported, not spread
            rows.append(empty_row(uid, r, h, metrics,
                                  f"scoring crashed: {type(exc).__name__}: {exc}"))
    return rows


def summarise(rows: list[dict], metrics: list[str]) -> list[dict]:
    out = []
    for m in metrics:
        vals = np.array([r[m] for r in rows], dtype=float)
        ok = vals[np.isfinite(vals)]
        out.append({"metric": m, "unit": METRICS[m].unit, "mean": float(ok.mean()) if ok.size else math.nan,
                    "median": float(np.median(ok)) if ok.size else math.nan,
                    "std": float(ok.std()) if ok.size else math.nan,
                    "count": int(ok.size), "failures": int(len(vals) - ok.size)})
    return out


def markdown(summary: list[dict]) -> str:
    lines = ["| metric | unit | mean | median | std | count | failures |",
             "|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['metric']} | {s['unit']} | {s['mean']:.4f} | {s['median']:.4f} | {s['std']:.4f} | "
                     f"{s['count']} | {s['failures']} |")
    return "\n".join(lines)


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) and math.isfinite(v) else
                            ("nan" if isinstance(v, float) else v)) for k, v in r.items()})


ROW_COLUMNS = ["id", "ref", "hyp", "duration_s"]
SUMMARY_COLUMNS = ["metric", "unit", "mean", "median", "std", "count", "failures"]


def summary_path(out: Path) -> Path:
    return out.with_name(out.stem + ".summary.csv")


def plots_dir(out: Path) -> Path:
    return out.with_name(out.stem + "-plots")


def check_report_paths(out: Path, inputs: list[str | Path], plot: bool) -> None:
    """Refuse, before any scoring, report paths that are inputs or files this tool did not
    write (a CSV report, its summary, the plots' PNGs): nothing but our own reports is
    replaced."""
    from pipeline.io.results import OutputError, claim_file, is_csv_with, is_png

    # reports of earlier versions had "duration" (no unit): the same prefix recognises both
    claim_file(out, inputs, is_csv_with(["id", "ref", "hyp", "duration"]), "score report")
    claim_file(summary_path(out), inputs, is_csv_with(SUMMARY_COLUMNS), "score summary")
    folder = plots_dir(out)
    if plot and folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith(("hist_", "best_", "worst_")) and p.suffix == ".png" and not is_png(p):
                raise OutputError(f"{p} is not a plot written by pipeline: it is left as it "
                                  "is; choose another --out, or move it away yourself")
        for i in inputs:
            if Path(i).resolve() == folder.resolve():
                raise OutputError(f"{folder} (the plots' folder) is one of the inputs; choose "
                                  "another --out")


def score(hyp: str | Path, out: str | Path, ref: str | Path | None = None,
          metrics: list[str] | tuple[str, ...] | None = None, *, workers: int = 1,
          cluster: str = "local", profile: str | None = None, progress: bool = True,
          plot: bool = False, chunk: int = 4, align: bool = False) -> ScoreResult:
    """Score every hypothesis (and every reference without one: 'missing hyp'); a
    hypothesis without a reference gets the metrics that need none (DNSMOS). ``align``:
    shift delayed hypotheses into place (else they are flagged)."""
    from pipeline.io.results import check_writable

    t0 = time.perf_counter()
    out = Path(out)
    check_writable(out.parent)
    check_report_paths(out, [p for p in (ref, hyp) if p is not None], plot)
    metrics = list(metrics or default_metrics(ref is not None))
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise UsageError(f"unknown metric(s) {unknown}; known: {', '.join(METRICS)}")
    refs, rate = references(ref)
    hyps = hypotheses(hyp)
    ids = sorted(set(hyps) | set(refs))
    if not ids:
        raise InputError(f"no audio found in --hyp {hyp}" + (f" or --ref {ref}" if ref else ""))
    if ref is not None and hyps and refs and not set(hyps) & set(refs):
        raise InputError(f"--ref {ref} and --hyp {hyp} share no utterance id (references like "
                         f"{sorted(refs)[0]!r}, hypotheses like {sorted(hyps)[0]!r}): ids are "
                         "file paths relative to each folder, without extension")
    items = [(i, refs.get(i), hyps.get(i)) for i in ids]
    tasks = [(k, (items[k:k + chunk], metrics, rate, align)) for k in range(0, len(items), chunk)]
    rows: list[dict] = []
    for res in run_tasks(_score_chunk, tasks, workers=workers, cluster=cluster, profile=profile,
                         desc="score", progress=progress):
        if res.error:
            for uid, r, h in items[res.key:res.key + chunk]:
                rows.append(empty_row(uid, r, h, metrics, f"scoring crashed: {res.error}"))
        else:
            rows.extend(res.value)
    rows.sort(key=lambda r: r["id"])
    summary = summarise(rows, metrics)
    _write_csv(out, rows, [*ROW_COLUMNS, "lag_ms", *metrics, "error"])
    summary_csv = summary_path(out)
    _write_csv(summary_csv, summary, SUMMARY_COLUMNS)
    result = ScoreResult(rows, summary, out, summary_csv, markdown(summary))
    if plot:
        from pipeline.plots import score_plots
        result.plots = score_plots(rows, metrics, plots_dir(out), rate)
    result.seconds = time.perf_counter() - t0
    return result
