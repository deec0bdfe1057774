"""``make demo``: the whole pipeline on the embedded test corpus (pocketsphinx-testdata).

The default route: extract (80 mels) -> phase (the mel inverted in memory by the
pseudo-inverse, then joint mel inversion: FGLA whose iterations refine the magnitude within
the mel, up to 800 iterations, each utterance stopping when converged; no magnitude is
written, so the store stays smaller than the audio) -> score against the original audio.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.config import load_config
from pipeline.errors import PipelineError
from pipeline.io.store import Store
from pipeline.recipes.pocketsphinx import prepare_pocketsphinx
from pipeline.stages.extract import extract
from pipeline.stages.phase import phase
from pipeline.stages.score import score
from pipeline.synthesis import default_iters


def run(out: Path, config: str = "mel80-16k", iters: int | None = None, workers: int = 1) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "pocketsphinx.jsonl"
    utts = prepare_pocketsphinx(manifest)
    cfg = load_config(config)
    store = out / f"pocketsphinx-{config}.zarr"
    print(f"[1/3] extract {len(utts)} utterances ({sum(u.duration or 0.0 for u in utts):.1f} s) -> {store}")
    # the demo's own folder: each run starts from a fresh store and fresh wavs (a store left by
    # an older run may hold magnitudes, which `phase` would then read instead of the mel)
    r = extract(manifest, store, cfg, workers=workers, shard_seconds=15, overwrite=True)
    size = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    pcm = 2 * sum(e.n_samples for e in Store(store).all_entries())
    print(f"      store {size / 1e6:.2f} MB = {size / pcm:.2f}x the 16-bit PCM of its audio")
    method = "pinv"
    iters = iters if iters is not None else default_iters("fgla", "auto", cfg)
    wavs = out / f"wav-{method}-joint{iters}"
    print(f"[2/3] phase: mel -> magnitude ({method}, in memory), joint mel inversion, "
          f"{iters} iterations -> {wavs}")
    phase(store, wavs, "fgla", n_iter=iters, workers=workers, source="mel", method=method,
          overwrite=True)
    report = out / f"report-{method}-joint{iters}.csv"
    print(f"[3/3] score against the originals -> {report}")
    res = score(wavs, report, store, plot=True)
    print()
    print(res.markdown)
    print()
    print("outputs:")
    for label, path in (("store", store), ("wavs", wavs), ("report", report),
                        ("summary", res.summary_csv), ("plots", report.with_name(report.stem + "-plots"))):
        print(f"  {label:8} {path}")
    return {"store": store, "wavs": wavs, "report": report, "ok": r.ok and res.failures == 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("demo-out"))
    ap.add_argument("--config", default="mel80-16k")
    ap.add_argument("--iters", type=int, default=None, help="default: the phase stage's (800)")
    ap.add_argument("--workers", type=int, default=1)
    a = ap.parse_args()
    try:
        res = run(a.out, a.config, a.iters, a.workers)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    raise SystemExit(0 if res["ok"] else 1)


if __name__ == "__main__":
    main()
