"""A weight soup (issue 18, twelfth and fourteenth sessions, tried and not kept): the
element-wise mean of two or more inverter weights of the same architecture, saved with the
first one's card.

    .venv/bin/python benchmarks/checks/weight_soup.py A.pt B.pt [C.pt ...] OUT.pt
"""
from __future__ import annotations

import sys

from pipeline.io import weights as W


def main() -> None:
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    *paths, out = sys.argv[1:]
    a, card = W.load_state(paths[0])
    states = [a]
    for p in paths[1:]:
        b, _ = W.load_state(p)
        if set(a) != set(b) or any(a[k].shape != b[k].shape for k in a):
            sys.exit(f"{paths[0]} and {p} are not the same architecture")
        states.append(b)
    soup = {k: sum(s[k].float() for s in states) / len(states) if a[k].is_floating_point()
            else a[k] for k in a}
    card = {k: v for k, v in card.items() if k not in ("file", "sha256", "stored_dtype", "bytes")}
    card["made_by"] = (f"the mean of {' and '.join(paths)} (benchmarks/checks/weight_soup.py)"
                       if len(paths) == 2 else
                       f"the mean of {len(paths)} weights: {', '.join(paths)} "
                       "(benchmarks/checks/weight_soup.py)")
    print(W.save(soup, card, out, half=True))


if __name__ == "__main__":
    main()
