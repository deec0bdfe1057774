"""Issue 18 diagnostic: where an inverter's low band is wrong, on training vs validation speech.

For 40 random utterances of each store: the mean |log(mag + 0.01) error| on bins 3-39
(47-610 Hz at mel80-16k), 40-127 and 128+ over the louder half of frames (by low-band
energy), for the pseudo-inverse, the net and the net + its refinement; and the low band's
contrast (per-frame sd of the log-magnitude over bins 3-39) of the truth and of the net.
Training ~ validation error means the net underfits (more data of the same kind will not help).

    .venv/bin/python benchmarks/checks/low_band_error.py [--weights runs/x/s8-m80-ft/s8-m80-ft.pt]
        [--stores data/train-mel80-16k.zarr data/val-mel80-16k.zarr]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from pipeline.algorithms.invert import pinv
from pipeline.io.store import Store
from pipeline.models.inverter import load_invert_model
from pipeline.train.invert import load_frames


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default="runs/x/s8-m80-ft/s8-m80-ft.pt")
    ap.add_argument("--stores", nargs="+",
                    default=["data/train-mel80-16k.zarr", "data/val-mel80-16k.zarr"])
    a = ap.parse_args()
    torch.set_num_threads(1)
    for name in a.stores:
        st = Store(name)
        cfg = st.config
        mel, mag, spans, _ = load_frames(st, 1)
        pick = np.random.default_rng(0).choice(len(spans), 40, replace=False)
        idx = np.concatenate([np.arange(spans[i][0], spans[i][0] + spans[i][1]) for i in pick])
        m, g = torch.from_numpy(mel[idx])[None], torch.from_numpy(mag[idx])
        low = g[:, 3:40].sum(1)
        loud = low > low.median()
        net = load_invert_model(a.weights, cfg).eval()
        with torch.inference_mode():
            raw, refined, p = net(m)[0].exp(), net.magnitude(m)[0], pinv(m, cfg)[0]

        def contrast(x: torch.Tensor) -> float:
            return float((x[:, 3:40] + 1e-2).log().std(1)[loud].mean())

        print(f"{name}: low-band contrast, truth {contrast(g):.2f}, net {contrast(raw):.2f}")
        for label, x in [("pinv", p), ("net", raw), ("net + refinement", refined)]:
            e = ((x + 1e-2).log() - (g + 1e-2).log()).abs()
            print(f"  {label}: |log error| bins 3-39 {float(e[:, 3:40][loud].mean()):.3f}, "
                  f"40-127 {float(e[:, 40:128][loud].mean()):.3f}, "
                  f"128+ {float(e[:, 128:][loud].mean()):.3f}", flush=True)


if __name__ == "__main__":
    main()
