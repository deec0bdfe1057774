"""Phase retrieval quality vs iterations and wall time: PESQ-WB / STOI.

Default: on TRUE magnitudes (phase only). With ``--magnitudes model``: on the magnitudes the
learned inverter (``--invert-weights``, default the shipped one) estimates from the 80-mel
spectrograms, i.e. the last stage of the product's mel -> waveform chain.

GLA, FGLA (zeros / random / pghi initial phase) and DeGLI (``--degli-weights``, default the
shipped weights made for that kind of magnitude: their FGLA warm-up, if any, then DeGLI
blocks), batched
over the whole test corpus (pocketsphinx-testdata, 46.6 s) in one process. DeGLI is
compared with FGLA at equal wall time: the FGLA curve (same run) is interpolated at each
DeGLI run's seconds.

    .venv/bin/python benchmarks/phase_quality.py [--iters 0 5 10 25 50 100 200]
        [--degli 4 8 16 32 100] [--warmup N] [--fgla-extra 110 125 150 300]
        [--magnitudes true|model] [--invert-weights W] [--degli-weights W]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
from _corpus import save_results, true_magnitudes
from pesq import pesq
from pystoi import stoi

from pipeline.config import load_config
from pipeline.synthesis import AlgoOptions, reconstruct


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, nargs="+", default=[0, 5, 10, 25, 50, 100, 200])
    ap.add_argument("--inits", nargs="+", default=["zeros", "random", "pghi"])
    ap.add_argument("--no-gla", action="store_true")
    ap.add_argument("--degli", type=int, nargs="*", default=[4, 8, 16, 32, 100])
    ap.add_argument("--warmup", type=int, nargs="*", default=[None],
                    help="FGLA iterations before the DeGLI blocks (default: the weights' own)")
    ap.add_argument("--fgla-extra", type=int, nargs="*", default=[110, 125, 150, 300],
                    help="more FGLA (zeros) points for the equal-wall-time comparison")
    ap.add_argument("--repeats", type=int, default=3, help="timing: best of N")
    ap.add_argument("--magnitudes", choices=["true", "model"], default="true")
    ap.add_argument("--invert-weights", default=None)
    ap.add_argument("--degli-weights", default=None)
    a = ap.parse_args()
    cfg = load_config("mel80-16k")
    ys, mags, lengths, audio_s = true_magnitudes(cfg)
    if a.magnitudes == "model":
        import torch

        from pipeline.dsp.mel import mel_from_magnitude
        from pipeline.models.inverter import load_invert_model
        from pipeline.synthesis import invert_frames
        mels = [mel_from_magnitude(torch.from_numpy(m.T)[None], cfg)[0].T.numpy() for m in mags]
        mags = invert_frames(mels, cfg, "model", model=load_invert_model(a.invert_weights, cfg))
    reconstruct(mags[:2], lengths[:2], cfg, "fgla", n_iter=2)

    def run(algo, it, init="zeros", **kw):
        best, w = float("inf"), None
        for _ in range(a.repeats):
            t = time.perf_counter()
            w = reconstruct(mags, lengths, cfg, algo, n_iter=it, init=init,
                            options=AlgoOptions(**kw))
            best = min(best, time.perf_counter() - t)
        p = float(np.mean([pesq(16000, y, o, "wb") for y, o in zip(ys, w)]))
        s = float(np.mean([stoi(y, o, 16000) for y, o in zip(ys, w)]))
        row = {"algo": algo, "init": init, **kw, "iters": it, "seconds": round(best, 3),
               "rtf": round(best / audio_s, 4), "pesq_wb": round(p, 3), "stoi": round(s, 4)}
        print(json.dumps(row), flush=True)
        return row

    rows = []
    for it in a.iters:
        if not a.no_gla:
            rows.append(run("gla", it, init="zeros"))
        for init in a.inits:
            rows.append(run("fgla", it, init=init))
    for it in a.fgla_extra:
        rows.append(run("fgla", it, init="zeros"))
    fgla = sorted((r["seconds"], r["pesq_wb"], r["iters"]) for r in rows
                  if r["algo"] == "fgla" and r["init"] == "zeros")
    from pipeline.io.weights import WEIGHTS_DIR, available, read_card
    dw = a.degli_weights or next((n for n in available("DeGLI") if read_card(
        WEIGHTS_DIR / f"{n}.json")["model"].get("magnitude", "true") == a.magnitudes), None)
    if a.degli and not dw:
        print(f"no DeGLI weights shipped for {a.magnitudes} magnitudes (see BENCHMARKS.md): "
              "DeGLI rows skipped", flush=True)
        a.degli = []
    save_results(f"phase-quality-{a.magnitudes}", rows)
    for warm in a.warmup:
        for it in a.degli:
            r = run("degli", it, init="zeros", warmup=warm, weights=dw)
            secs = [f[0] for f in fgla]
            r["fgla_pesq_at_equal_time"] = round(float(np.interp(r["seconds"], secs, [f[1] for f in fgla])), 3)
            r["fgla_iters_at_equal_time"] = round(float(np.interp(r["seconds"], secs, [f[2] for f in fgla])))
            print(json.dumps({"degli_vs_fgla_equal_time": r}), flush=True)


if __name__ == "__main__":
    main()
