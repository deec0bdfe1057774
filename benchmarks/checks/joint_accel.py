"""Fast-joint study: the mel-projected iteration's PESQ-WB / STOI vs iterations and engine
seconds, one run with snapshots at the checkpoints, and the per-utterance stopping rules.

The iteration runs to the largest checkpoint in the phase stage's length buckets (256 padded
frames, torch on the given threads); the waveform at iteration k is the inverse of the
projected estimate at k, as the stage writes it. Features (mels and the pinv magnitudes) are
cached per set in --cache.

    PYTHONPATH=benchmarks .venv/bin/python benchmarks/checks/joint_accel.py --set ru \
        --iters 25 50 100 200 400 800
    PYTHONPATH=benchmarks .venv/bin/python benchmarks/checks/joint_accel.py --set ru \
        --per-item --iters $(seq -s' ' 25 25 800) --out F.json
    PYTHONPATH=benchmarks .venv/bin/python benchmarks/checks/joint_accel.py --analyse F.json
"""
from __future__ import annotations

import argparse
import json
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from pesq import pesq
from pystoi import stoi

from pipeline.algorithms.joint import MelTarget, _unit, mel_error, project_mel
from pipeline.config import load_config
from pipeline.dsp.mel import compress, filterbank, ragged_batch, stft
from pipeline.dsp.stft import FramePair
from pipeline.io.audio import load
from pipeline.io.manifest import read_manifest
from pipeline.parallel.batching import buckets, stack_frames
from pipeline.synthesis import invert_frames
from pipeline.synthesis.invert import mel_floor

REPO = Path(__file__).resolve().parents[2]
SETS = {
    "test": (REPO / "manifests" / "pocketsphinx.jsonl", dict()),
    "ru": (REPO / "data/asterisk-ru/all.jsonl", dict(every=3, lo=1.5, hi=8, limit=60)),
    "it": (REPO / "data/asterisk-it/all.jsonl", dict(every=3, lo=1.5, hi=8, limit=60)),
}


def corpus(name, cfg, cache: Path, init="pinv"):
    f = cache / f"{name}-{cfg.name}-{init}.pt"
    if f.exists():
        return torch.load(f, weights_only=False)
    path, sel = SETS[name]
    utts = read_manifest(path)
    if sel:
        utts = sorted((u for u in utts if sel["lo"] <= u.duration <= sel["hi"]),
                      key=lambda u: u.id)[::sel["every"]][:sel["limit"]]
    ys = [load(u.path, cfg.sample_rate) for u in utts]
    batch, n = ragged_batch(ys, cfg)
    A = filterbank(cfg)
    mels = []
    for i, k in enumerate(n):
        m = stft(batch[i:i + 1], cfg, padded=True).abs()[0, :, :k]
        mels.append(compress(A @ (m if cfg.power == 1 else m ** 2), cfg).T.contiguous().numpy())
    model = None
    if init == "model":
        from pipeline.models.inverter import load_invert_model
        model = load_invert_model(None, cfg)
    mags = invert_frames(mels, cfg, init, model=model)
    data = dict(ids=[u.id for u in utts], ys=ys, mels=mels, mags=mags)
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(data, f)
    return data


# --- the iteration, with a snapshot callback: snap(k, projected estimate) after iteration k ---
# (the candidates measured against it, at c8165ac: steps 1/2, a coarse start, momentum
# 0.98/0.995, a gradient restart, AGLA, RAAR and RAAR -> default; BENCHMARKS.md)

def pm(c, target, steps):
    """The mel projection of a complex estimate: its phase, the projected magnitude."""
    mag, inv = _unit(c)
    return c * inv.mul_(project_mel(mag, target, steps))


def base(spec, target, pair, n, snap, momentum=0.99, steps=3):
    """FGLA with the mel projection (the default route's iteration, every iteration)."""
    alpha = momentum / (1 + momentum)
    prev = None
    for k in range(1, n + 1):
        rebuilt = pair.stft(pair.istft(spec))
        ang = torch.sub(rebuilt, prev, alpha=alpha) if prev is not None else rebuilt
        prev = rebuilt
        spec = pair.own_frames(pm(ang, target, steps))
        snap(k, spec)


def run(data, cfg, checkpoints, batch_frames=256, steps=3):
    n = max(checkpoints)
    mags, mels, ys = data["mags"], data["mels"], data["ys"]
    outs = {k: [None] * len(mags) for k in checkpoints}
    errs = {k: [None] * len(mags) for k in checkpoints}
    secs = {k: 0.0 for k in checkpoints}
    fill = mel_floor(cfg)
    for group in buckets([m.shape[0] for m in mags], batch_frames):
        mag = stack_frames([mags[i] for i in group])
        mel = stack_frames([mels[i] for i in group], fill)
        lengths = torch.tensor([len(ys[i]) for i in group])
        t0 = time.perf_counter()
        pair = FramePair(cfg, mag.shape[1], lengths)
        target = MelTarget.from_compressed(mel, cfg)
        target.start = mag
        spec = pair.own_frames(mag.to(torch.complex64))
        clock = {"t": t0, "spent": 0.0}

        def snap(k, p, group=group, pair=pair, lengths=lengths, clock=clock, target=target):
            if k not in outs:
                return
            now = time.perf_counter()
            clock["spent"] += now - clock["t"]
            secs[k] += clock["spent"]
            x = pair.istft(p)
            e = mel_error(pair.stft(x), target, pair).tolist()
            for j, (i, y) in enumerate(zip(group, pair.crop(x, lengths.tolist()))):
                outs[k][i] = y.numpy().copy()
                errs[k][i] = e[j]
            clock["t"] = time.perf_counter()
        with torch.inference_mode():
            base(spec, target, pair, n, snap, steps=steps)
    return outs, secs, errs


def _score(args):
    r, h, sr = args
    if not np.isfinite(h).all():       # a diverged item: scored as the worst PESQ / STOI
        return 1.0, 0.0
    if sr != 16000:                    # wideband PESQ: at 16 kHz
        import soxr
        r, h = soxr.resample(r, sr, 16000), soxr.resample(h, sr, 16000)
    return pesq(16000, r, h, "wb"), stoi(r, h, 16000)


def stop_rules(path: str, windows=(25, 50, 100, 200), tols=(0.01, 0.03, 0.1)) -> None:
    """From a ``--per-item`` run: PESQ-WB and cost (frames x iterations, against running them
    all) of the stopping rule of ``mel_iterate`` for each window and tolerance (a check every
    ``window`` iterations; stop when the best log-mel error improved by less than ``tol``
    since the previous check), beside the fixed counts and the oracle that stops each item
    at its first checkpoint within 0.03 of its last one."""
    rows = json.loads(Path(path).read_text())
    ks = sorted(r["iters"] for r in rows)
    by = {r["iters"]: r for r in rows}
    P = np.array([by[k]["item_pesq"] for k in ks])                 # [checkpoints, items]
    best = np.minimum.accumulate(np.array([by[k]["item_err"] for k in ks]), axis=0)
    frames = np.array(rows[0]["frames"], float)
    n, top = P.shape[1], ks[-1]

    def cost(its):
        return float((its * frames).sum() / (top * frames.sum()))
    print(f"{path}: {n} items")
    for k in ks:
        if k % 100 == 0:
            print(f"  fixed {k:4d}: PESQ {P[ks.index(k)].mean():.3f}  cost {k / top:.3f}")
    for w in windows:
        for tol in tols:
            stop = np.full(n, len(ks) - 1)
            for i in range(n):
                for j, k in enumerate(ks):
                    if k % w == 0 and k >= 2 * w and (k - w) in by:
                        before = best[ks.index(k - w), i]
                        if before - best[j, i] <= tol * before:
                            stop[i] = j
                            break
            its = np.array([ks[j] for j in stop])
            print(f"  window {w:3d} tol {tol:<5}: PESQ {P[stop, np.arange(n)].mean():.3f}  "
                  f"cost {cost(its):.3f}  mean iterations {its.mean():.0f}")
    first = np.array([next(j for j in range(len(ks)) if P[j, i] >= P[-1, i] - 0.03)
                      for i in range(n)])
    print(f"  oracle (first within 0.03 of the last): PESQ {P[first, np.arange(n)].mean():.3f}"
          f"  cost {cost(np.array([ks[j] for j in first])):.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", action="append", default=[], choices=list(SETS))
    ap.add_argument("--iters", nargs="+", type=int, default=[25, 50, 100, 200, 400, 800])
    ap.add_argument("--init", default="pinv")
    ap.add_argument("--config", default="mel80-16k")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="rescalings per iteration")
    ap.add_argument("--cache", default="/tmp/joint-accel-cache")
    ap.add_argument("--out", default="")
    ap.add_argument("--per-item", action="store_true",
                    help="keep each item's PESQ and log-mel error at every checkpoint")
    ap.add_argument("--analyse", nargs="+", default=[],
                    help="no run: the stopping rules on these --per-item results")
    a = ap.parse_args()
    if a.analyse:
        for path in a.analyse:
            stop_rules(path)
        return
    torch.set_num_threads(a.threads)
    cfg = load_config(a.config)
    rows = []
    for name in a.set:
        data = corpus(name, cfg, Path(a.cache), a.init)
        dur = sum(len(y) for y in data["ys"]) / cfg.sample_rate
        outs, secs, errs = run(data, cfg, a.iters, steps=a.steps)
        with Pool(a.threads) as pool:
            for k in a.iters:
                sc = pool.map(_score, [(r, h, cfg.sample_rate)
                                       for r, h in zip(data["ys"], outs[k])])
                p, s = np.array(sc).T
                row = dict(set=name, steps=a.steps, init=a.init, iters=k,
                           pesq=round(float(p.mean()), 3), stoi=round(float(s.mean()), 4),
                           seconds=round(secs[k], 2), rtf=round(secs[k] / dur, 4))
                print(json.dumps(row), flush=True)
                if a.per_item:
                    row.update(item_pesq=[round(float(x), 4) for x in p],
                               item_err=errs[k], frames=[m.shape[0] for m in data["mels"]])
                rows.append(row)
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
