"""Recorded words of Debian's klettres-data and ktuberling-data (ogg, many speakers and
languages, mostly 44.1 kHz): manifests pointing at the installed files (extract resamples)."""
from __future__ import annotations

from pathlib import Path

from pipeline.io.manifest import Utterance, describe
from pipeline.io.results import Failure
from pipeline.recipes._common import Prepared, finish, need

KDE_DIRS = {"klettres": (Path("/usr/share/klettres"), "klettres-data"),
            "ktuberling": (Path("/usr/share/ktuberling/sounds"), "ktuberling-data")}


def prepare_kde(out_dir: str | Path, val_fraction: float = 0.05, min_duration: float = 0.3
                ) -> Prepared:
    """Train/val manifests of both packages' words (ids ``klettres/...``, ``ktuberling/...``);
    files that cannot be read go to ``kde-failures.csv``."""
    files = []
    for name, (root, package) in KDE_DIRS.items():
        need(root, package)
        files += [(f"{name}/{p.relative_to(root).with_suffix('').as_posix()}", p)
                  for p in sorted(root.rglob("*.ogg"))]
    utts: list[Utterance] = []
    fails: list[Failure] = []
    for uid, p in files:
        u, f = describe(p, uid)
        if u is not None:
            utts.append(u)
        elif f is not None:
            fails.append(f)
    return finish(utts, fails, Path(out_dir), "kde", val_fraction, min_duration)
