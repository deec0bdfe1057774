"""``make demo``: the whole pipeline on the embedded test corpus (pocketsphinx-testdata).

extract (80 mels, with true magnitudes) -> invert (pseudo-inverse) -> phase on the default route
(joint mel inversion: FGLA whose iterations refine the magnitude within the mel, 800
iterations) -> score against the original audio.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.config import load_config
from pipeline.io.manifest import prepare_pocketsphinx
from pipeline.stages.extract import extract
from pipeline.stages.invert import invert
from pipeline.stages.phase import default_iters, phase
from pipeline.stages.score import score


def run(out: Path, config: str = "mel80-16k", iters: int | None = None, workers: int = 1) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "pocketsphinx.jsonl"
    utts = prepare_pocketsphinx(manifest)
    cfg = load_config(config)
    store = out / f"pocketsphinx-{config}.zarr"
    print(f"[1/4] extract {len(utts)} utterances ({sum(u.duration or 0.0 for u in utts):.1f} s) -> {store}")
    r = extract(manifest, store, cfg, with_mag=True, workers=workers, shard_seconds=15)
    method = "pinv"
    print(f"[2/4] invert mel -> magnitude with {method}")
    invert(store, method, workers=workers)
    iters = iters if iters is not None else default_iters("fgla", "auto", cfg)
    wavs = out / f"wav-{method}-joint{iters}"
    print(f"[3/4] phase: joint mel inversion, {iters} iterations -> {wavs}")
    phase(store, wavs, "fgla", n_iter=iters, workers=workers)
    report = out / f"report-{method}-joint{iters}.csv"
    print(f"[4/4] score against the originals -> {report}")
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
    res = run(a.out, a.config, a.iters, a.workers)
    raise SystemExit(0 if res["ok"] else 1)


if __name__ == "__main__":
    main()
