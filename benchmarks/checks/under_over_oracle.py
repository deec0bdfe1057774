"""Issue 18 diagnostic (fifteenth session): which way is today's inverter wrong below 1.25 kHz?

FGLA 100 (magnitude fixed; PESQ-WB from a zero phase and from random phases of seeds 0 and 1)
on the shipped inverter's magnitude (`invert_frames`, method model) with, in bins 3-79
(47-1234 Hz), its over-estimates lowered to the truth, or its under-estimates raised to it;
the under-estimates split by where they are (voiced frames by the comb salience of
``f0_from_mel.py``: within 1 bin of a harmonic of the true F0, or between; other frames); and
a non-learned "valley floor" (each bin at least its +-4-bin neighbourhood's peak less D
nepers). An oracle where the truth is used, never a method: it says which error a better
inverter should remove. Reads a store made with `pipeline extract --with-mag`.

    .venv/bin/python benchmarks/checks/under_over_oracle.py data/ru-b-mel80-16k.zarr [--n 60]

``--fixes``: instead of the oracle, non-learned level corrections that use no truth (voiced
frames found the same way on the pseudo-inverse): the band above 1.25 kHz lifted by e^0.5 or
e^0.25 (the net lies ~0.55 neper below the truth there, the pseudo-inverse on it), the low
band of non-voiced frames lifted by e^0.3, the pseudo-inverse or its geometric mean with the
net in non-voiced frames. ``--bias``: no FGLA; the median log error (estimate - truth) of the
net and of the pseudo-inverse in bins 3-79 and 80+, voiced frames (by the truth) and the rest.
``--levels``: the oracle over all bins, the under-estimates raised only where the truth lies in
a range of levels (below 0.01, the training loss's floor; 0.01-0.1; above 0.1, about the
median bin), then those above 0.1 by band (bins 0-79, 80-159, 160-255, 256+), and those of
bins 0-79 by frame class (voiced as above; other frames whose salience is in the utterance's
top half; the rest).
"""
from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import torch
from f0_from_mel import F0S, combs
from pesq import pesq

from pipeline.config import AudioConfig
from pipeline.io.audio import load
from pipeline.io.store import Store
from pipeline.models.inverter import load_invert_model
from pipeline.stages.invert import invert_frames
from pipeline.stages.phase import reconstruct


def valley_floor(mag: np.ndarray, depth: float, lo: int = 3, hi: int = 80,
                 half: int = 4) -> np.ndarray:
    """``mag`` with bins lo..hi-1 raised to at least their neighbourhood's peak - depth (log)."""
    log = np.log(mag + 1e-5)
    peak = torch.nn.functional.max_pool1d(torch.from_numpy(log[:, :hi + half])[None],
                                          2 * half + 1, 1, half)[0].numpy()
    log[:, lo:hi] = np.maximum(log[:, lo:hi], peak[:, lo:hi] - depth)
    return np.exp(log).astype(mag.dtype)


def pitch(mag: np.ndarray, sample_rate: int,
          n_fft: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame: the comb salience's F0 over bins 3-79, voiced (the louder half by the
    energy there, salience in the top half of those; per utterance, where ``f0_from_mel.py``
    takes both halves over all its frames), and the salience's peak."""
    lo, hi = 3, 80
    lx = torch.from_numpy(np.log(mag[:, lo:hi] + 1e-2))
    sal = (lx - lx.mean(1, keepdim=True)) @ combs(sample_rate, n_fft, lo, hi, F0S).T
    energy, peak = mag[:, lo:hi].sum(1), sal.max(1).values.numpy()
    loud = energy > np.median(energy)
    voiced = loud & (peak > np.median(peak[loud])) if loud.any() else loud
    return F0S[sal.argmax(1)].numpy(), voiced, peak


def voiced_frames(mag: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    return pitch(mag, cfg.sample_rate, cfg.n_fft)[1]


def _lift(m: np.ndarray, rows: np.ndarray | slice, bins: slice, gain: float) -> np.ndarray:
    m[rows, bins] *= np.exp(gain)
    return m


FIXES: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "band above 1.25 kHz x e^0.5": lambda m, p, v: _lift(m, slice(None), slice(80, None), 0.5),
    "band above 1.25 kHz x e^0.25": lambda m, p, v: _lift(m, slice(None), slice(80, None), 0.25),
    "bins 3-79 x e^0.3 in non-voiced frames": lambda m, p, v: _lift(m, ~v, slice(3, 80), 0.3),
    "pseudo-inverse in non-voiced frames (bins 3+)":
        lambda m, p, v: np.where(~v[:, None] & (np.arange(m.shape[1]) >= 3), p, m),
    "geometric mean with the pseudo-inverse, non-voiced frames (bins 3+)":
        lambda m, p, v: np.where(~v[:, None] & (np.arange(m.shape[1]) >= 3),
                                 np.sqrt(m * p), m),
}


def near_harmonic(true: np.ndarray, sample_rate: int, n_fft: int) -> np.ndarray:
    """``[T, F]``: True within 1 bin of a harmonic of the frame's F0 in voiced frames."""
    f0, voiced, _ = pitch(true, sample_rate, n_fft)
    pos = np.arange(true.shape[1])[None, :] * sample_rate / n_fft / f0[:, None]   # in harmonics
    dist = np.abs(pos - np.round(pos)) * f0[:, None] * n_fft / sample_rate       # in bins
    return voiced[:, None] & (dist <= 1.0) & (np.round(pos) >= 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("--n", type=int, default=60, help="the store's first N utterances")
    ap.add_argument("--fixes", action="store_true", help="score the level corrections instead")
    ap.add_argument("--bias", action="store_true", help="print the median log errors only")
    ap.add_argument("--levels", action="store_true", help="the oracle split by level and band")
    a = ap.parse_args()
    torch.set_num_threads(1)
    s = Store(a.store)
    cfg = s.config
    ents, mels = zip(*list(s.iter_utterances("mel"))[:a.n])
    trues = [m for _, m in list(s.iter_utterances("mag_true"))[:a.n]]
    refs = [load(e.source, cfg.sample_rate) for e in ents]
    model = invert_frames(list(mels), cfg, "model", model=load_invert_model(None, cfg))

    def score(mags: list[np.ndarray]) -> str:
        out = []
        for init, seed in (("zeros", 0), ("random", 0), ("random", 1)):
            waves = reconstruct(mags, [e.n_samples for e in ents], cfg, "fgla", n_iter=100,
                                init=init, seed=seed)
            out.append(np.mean([pesq(16000, y, w, "wb") for y, w in zip(refs, waves)]))
        return " / ".join(f"{v:.3f}" for v in out)

    if a.bias:
        pinvs = invert_frames(list(mels), cfg, "pinv")
        voiced = [voiced_frames(t, cfg) for t in trues]
        for name, est in (("net", model), ("pseudo-inverse", pinvs)):
            for cls, pick in (("voiced", lambda v: v), ("other", lambda v: ~v)):
                err = [np.log(e[pick(v)] + 1e-5) - np.log(t[pick(v)] + 1e-5)
                       for e, t, v in zip(est, trues, voiced)]
                low = np.median(np.concatenate([x[:, 3:80].ravel() for x in err]))
                high = np.median(np.concatenate([x[:, 80:].ravel() for x in err]))
                print(f"{a.store} {name}, {cls} frames: median log error bins 3-79 {low:+.2f}, "
                      f"80+ {high:+.2f}")
        return
    if a.fixes:
        pinvs = invert_frames(list(mels), cfg, "pinv")
        rows = [("model", model)] + [(name, [fix(m.copy(), p, voiced_frames(p, cfg))
                                             for m, p in zip(model, pinvs)])
                                     for name, fix in FIXES.items()]
    elif a.levels:
        rows = level_rows(trues, model, cfg)
    else:
        rows = oracle_rows(trues, model, cfg)
    for name, mags in rows:
        print(f"{a.store} {name}: PESQ-WB zero / random 0 / random 1: {score(mags)}", flush=True)


def level_rows(trues: list[np.ndarray], model: list[np.ndarray],
               cfg: AudioConfig) -> list[tuple[str, list[np.ndarray]]]:
    bins = np.arange(cfg.n_freq)

    def raised(where: Callable[[np.ndarray, int], np.ndarray]) -> list[np.ndarray]:
        return [np.where((t > m) & where(t, i), t, m) for i, (t, m) in enumerate(zip(trues, model))]

    rows = [(f"under-estimates raised where the truth is in [{lo:g}, {hi:g})",
             raised(lambda t, i, lo=lo, hi=hi: (t >= lo) & (t < hi)))
            for lo, hi in ((0.0, 0.01), (0.01, 0.1), (0.1, np.inf))]
    rows += [(f"... >= 0.1, bins {lo}-{hi - 1} only",
              raised(lambda t, i, lo=lo, hi=hi: (t >= 0.1) & (bins >= lo) & (bins < hi)))
             for lo, hi in ((0, 80), (80, 160), (160, 256), (256, cfg.n_freq))]
    classes = []
    for t in trues:
        _, voiced, peak = pitch(t, cfg.sample_rate, cfg.n_fft)
        periodic = peak > np.median(peak)
        classes.append({"voiced frames": voiced, "other periodic frames": periodic & ~voiced,
                        "the rest": ~periodic & ~voiced})
    for name in classes[0]:
        rows.append((f"... >= 0.1, bins 0-79, {name} only",
                     raised(lambda t, i, name=name: (t >= 0.1) & (bins < 80)
                            & classes[i][name][:, None])))
    return rows


def oracle_rows(trues: list[np.ndarray], model: list[np.ndarray],
                cfg: AudioConfig) -> list[tuple[str, list[np.ndarray]]]:
    band = (np.arange(cfg.n_freq) >= 3) & (np.arange(cfg.n_freq) < 80)
    near = [near_harmonic(t, cfg.sample_rate, cfg.n_fft) for t in trues]   # [T, F]
    rows = [("model", model), ("true magnitude", trues),
            ("over-estimates (bins 3-79) lowered to the truth",
             [np.where(band & (t < m), t, m) for t, m in zip(trues, model)]),
            ("under-estimates (bins 3-79) raised to the truth",
             [np.where(band & (t > m), t, m) for t, m in zip(trues, model)])]
    for name, where in [("near a harmonic (voiced frames)", lambda v: v),
                        ("between harmonics (voiced frames)",
                         lambda v: v.any(1, keepdims=True) & ~v),
                        ("in other frames", lambda v: ~v.any(1, keepdims=True))]:
        rows.append((f"under-estimates raised, only {name}",
                     [np.where(band & (t > m) & where(v), t, m)
                      for t, m, v in zip(trues, model, near)]))
    rows += [(f"valley floor, depth {d:g}", [valley_floor(m, d) for m in model])
             for d in (3.0, 4.0, 5.0)]
    return rows


if __name__ == "__main__":
    main()
