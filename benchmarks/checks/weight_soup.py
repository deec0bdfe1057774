"""A weight soup (issue 18, twelfth session, tried and not kept): the element-wise mean of two
inverter weights of the same architecture, saved with the first one's card.

    .venv/bin/python benchmarks/checks/weight_soup.py A.pt B.pt OUT.pt
"""
from __future__ import annotations

import sys

from pipeline.io import weights as W


def main() -> None:
    a_path, b_path, out = sys.argv[1:4]
    a, card = W.load_state(a_path)
    b, _ = W.load_state(b_path)
    if set(a) != set(b) or any(a[k].shape != b[k].shape for k in a):
        sys.exit(f"{a_path} and {b_path} are not the same architecture")
    soup = {k: (a[k].float() + b[k].float()) / 2 if a[k].is_floating_point() else a[k]
            for k in a}
    card = {k: v for k, v in card.items() if k not in ("file", "sha256", "stored_dtype", "bytes")}
    card["made_by"] = f"the mean of {a_path} and {b_path} (benchmarks/checks/weight_soup.py)"
    print(W.save(soup, card, out, half=True))


if __name__ == "__main__":
    main()
