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
    raise InputError(f"--ref {ref}: neither a wav folder nor a pipeline store")


def hypotheses(hyp: str | Path) -> dict[str, str]:
    hyp = Path(hyp)
    if not hyp.is_dir():
        raise InputError(f"--hyp {hyp}: not a folder of wavs")
    return {utterance_id(p, hyp): str(p) for p in scan_folder(hyp, (".wav", ".flac"))}


def _native_rate(path: str) -> int:
    from pipeline.io.audio import info
    return info(path)["sample_rate"]


def empty_row(uid: str, ref_path: str | None, hyp_path: str | None, metrics: list[str],
              error: str = "") -> dict:
    """A row with every metric NaN (filled in by :func:`score_one`, or left so with ``error``)."""
    row: dict = {"id": uid, "ref": ref_path or "", "hyp": hyp_path or "", "duration": math.nan,
                 **{m: math.nan for m in metrics}}
    if error:
        row["error"] = error
    return row


def score_one(uid: str, ref_path: str | None, hyp_path: str | None, metrics: list[str],
              rate: int | None) -> dict:
    """One row: every metric or NaN, and the reasons in ``error``."""
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
    row["duration"] = round(len(est) / sr, 4)
    if refy is not None:
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
                 rate: int | None) -> list[dict]:
    import torch
    torch.set_num_threads(1)
    rows = []
    for uid, r, h in items:
        try:
            rows.append(score_one(uid, r, h, metrics, rate))
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


ROW_COLUMNS = ["id", "ref", "hyp", "duration"]
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

    claim_file(out, inputs, is_csv_with(ROW_COLUMNS), "score report")
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
          plot: bool = False, chunk: int = 4) -> ScoreResult:
    """Score every hypothesis (and every reference without one: 'missing hyp')."""
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
    items = [(i, refs.get(i), hyps.get(i)) for i in ids]
    if ref is not None:
        stray = [i for i in hyps if i not in refs]
        items = [(i, r, h) for i, r, h in items if i not in stray]
    else:
        stray = []
    tasks = [(k, (items[k:k + chunk], metrics, rate)) for k in range(0, len(items), chunk)]
    rows: list[dict] = []
    for res in run_tasks(_score_chunk, tasks, workers=workers, cluster=cluster, profile=profile,
                         desc="score", progress=progress):
        if res.error:
            for uid, r, h in items[res.key:res.key + chunk]:
                rows.append(empty_row(uid, r, h, metrics, f"scoring crashed: {res.error}"))
        else:
            rows.extend(res.value)
    for uid in stray:
        rows.append(empty_row(uid, None, hyps[uid], metrics, "no reference with this id"))
    rows.sort(key=lambda r: r["id"])
    summary = summarise(rows, metrics)
    _write_csv(out, rows, [*ROW_COLUMNS, *metrics, "error"])
    summary_csv = summary_path(out)
    _write_csv(summary_csv, summary, SUMMARY_COLUMNS)
    result = ScoreResult(rows, summary, out, summary_csv, markdown(summary))
    if plot:
        from pipeline.plots import score_plots
        result.plots = score_plots(rows, metrics, plots_dir(out), rate)
    result.seconds = time.perf_counter() - t0
    return result
