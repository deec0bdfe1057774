"""Corpus recipes: locate the Debian-packaged corpora, decode or synthesise what needs it, and
write manifests (``pipeline prepare NAME``). Each recipe is a module; :data:`RECIPES` maps the
names the CLI takes to a call with the options it reads.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pipeline.errors import UsageError
from pipeline.recipes._common import Prepared


@dataclass(frozen=True)
class RecipeOptions:
    """What `pipeline prepare` passes on; each recipe reads the fields it needs."""
    languages: tuple[str, ...] = ("en", "fr", "es")     # asterisk
    manifest: Path | None = None                        # speed: the corpus to perturb
    factors: tuple[float, ...] = (0.9, 1.1)             # speed
    voices: tuple[str, ...] | None = None               # festival (None: all)
    per_voice: int = 300                                # festival


def _pocketsphinx(out: Path, o: RecipeOptions) -> Prepared:
    from pipeline.recipes.pocketsphinx import prepare_pocketsphinx
    path = out if out.suffix == ".jsonl" else out / "pocketsphinx.jsonl"
    prepare_pocketsphinx(path)
    return Prepared({"all": path})


def _asterisk(out: Path, o: RecipeOptions) -> Prepared:
    from pipeline.recipes.asterisk import prepare_asterisk
    return prepare_asterisk(out, o.languages)


def _kde(out: Path, o: RecipeOptions) -> Prepared:
    from pipeline.recipes.kde import prepare_kde
    return prepare_kde(out)


def _festival(out: Path, o: RecipeOptions) -> Prepared:
    from pipeline.recipes.festival import FESTIVAL_VOICES, prepare_festival
    return prepare_festival(out, o.voices or tuple(FESTIVAL_VOICES), o.per_voice)


def _speed(out: Path, o: RecipeOptions) -> Prepared:
    from pipeline.recipes.speed import speed_perturb
    if o.manifest is None:
        raise UsageError("prepare speed needs --manifest (the corpus to perturb)")
    return speed_perturb(o.manifest, o.factors, out)


RECIPES: dict[str, Callable[[Path, RecipeOptions], Prepared]] = {
    "pocketsphinx": _pocketsphinx, "asterisk": _asterisk, "kde": _kde, "festival": _festival,
    "speed": _speed}


def prepare(corpus: str, out: str | Path, options: RecipeOptions = RecipeOptions()) -> Prepared:
    """Run the recipe ``corpus`` into ``out`` (a folder; pocketsphinx: a manifest path too)."""
    if corpus not in RECIPES:
        raise UsageError(f"unknown corpus {corpus!r}: choose one of {', '.join(RECIPES)}")
    return RECIPES[corpus](Path(out), options)


__all__ = ["RECIPES", "Prepared", "RecipeOptions", "prepare"]
