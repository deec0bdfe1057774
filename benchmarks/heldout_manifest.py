"""A held-out corpus for the whole-CLI benchmarks: from each manifest, utterances of
--min-dur..--max-dur seconds sorted by id, less every --every-th (the fast-joint tuning sets:
every third of these, 60 prompts each, BENCHMARKS.md), up to --seconds: other prompts of the
same voices, so a default chosen on the tuning sets is measured on others.

    .venv/bin/python benchmarks/heldout_manifest.py data/asterisk-ru/all.jsonl \\
        data/asterisk-it/all.jsonl --seconds 310 --out data/heldout-10min.jsonl
"""
from __future__ import annotations

import argparse

from pipeline.io.manifest import read_manifest, write_manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("manifests", nargs="+")
    ap.add_argument("--every", type=int, default=3, help="leave out every k-th (the tuning set)")
    ap.add_argument("--min-dur", type=float, default=1.5)
    ap.add_argument("--max-dur", type=float, default=8.0)
    ap.add_argument("--seconds", type=float, default=310.0, help="per manifest")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    picked = []
    for m in a.manifests:
        utts = sorted((u for u in read_manifest(m) if a.min_dur <= u.duration <= a.max_dur),
                      key=lambda u: u.id)
        utts = [u for i, u in enumerate(utts) if i % a.every]
        total = 0.0
        for u in utts:
            if total >= a.seconds:
                break
            picked.append(u)
            total += u.duration
    write_manifest(picked, a.out)
    print(f"{a.out}: {len(picked)} utterances, {sum(u.duration for u in picked):.1f} s")


if __name__ == "__main__":
    main()
