"""Which route a request resolves to: the phase algorithm, what each iteration projects
onto, the default number of iterations, and the inverter (name -> weights + digest).

One place decides these for ``phase``, ``vocode``, ``predict`` and ``run``; each refuses a
route that cannot run before any work, in words.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pipeline.algorithms.gla import fgla, gla
from pipeline.algorithms.joint import joint
from pipeline.config import AudioConfig
from pipeline.errors import UsageError
from pipeline.models.degli import degli
from pipeline.synthesis.invert import METHODS

ALGOS: dict[str, Callable] = {"gla": gla, "fgla": fgla, "degli": degli, "admm": joint}
# What each iteration projects onto: the inverted magnitude (held fixed), or the magnitudes
# whose mel is the store's mel (joint mel inversion, pipeline.algorithms.joint); ``auto``:
# ``mel`` where frames overlap by >= 75 %. With 50 % overlap the STFT has too little
# redundancy for consistency to add detail (tests/test_joint.py measures it).
PROJECTS = ("auto", "mag", "mel")
INITS = ("zeros", "random", "pghi")
# Default iterations per route, from the curves (BENCHMARKS.md, joint mel inversion): FGLA on
# a fixed magnitude gains nothing past ~100; the joint route is still gaining at 400.
DEFAULT_ITERS = {"mag": 100, "mel": 800}
# The joint route's --tol when none is given, by preset: on the held-out sets (BENCHMARKS.md,
# per-utterance stopping) the largest tolerance whose PESQ-WB on each set stays within 0.005
# of running all 800 iterations (mel80-16k: 15-22 % fewer iterations; hifigan-22k,
# espnet-22k and librosa-22k: none did). Those and configs from files run every iteration.
DEFAULT_TOL = {"mel80-16k": 0.03, "mel250-16k": 0.01}


def resolve_project(project: str, cfg: AudioConfig, algo: str = "fgla",
                    source: str = "mag") -> str:
    """What the iterations project onto, ``mel`` or ``mag``: ``admm`` is always joint; ``auto``
    holds the magnitude fixed for DeGLI, for true magnitudes (phase-only evaluation) and for
    frames that overlap by less than 75 %."""
    if algo == "admm":
        return "mel"
    if project == "auto":
        if algo == "degli" or source == "true":
            return "mag"
        return "mel" if cfg.n_fft >= 4 * cfg.hop_length else "mag"
    return project


def default_iters(algo: str, project: str, cfg: AudioConfig) -> int:
    """``--iters`` when none is given: by the route that ``algo`` and ``project`` resolve to."""
    return DEFAULT_ITERS[resolve_project(project, cfg, algo)]


def resolve_tol(tol: float | None, algo: str, project: str, cfg: AudioConfig,
                source: str = "mag") -> float:
    """``--tol``, checked; when none is given: the preset's :data:`DEFAULT_TOL` on joint mel
    inversion by FGLA or GLA (the route ``algo``, ``project`` and ``source`` resolve to), else
    0. ``--tol`` stops converged items of that route only: any other (ADMM, a fixed
    magnitude) runs its ``--iters`` and refuses a tolerance."""
    route = resolve_project(project, cfg, algo, source)
    joint = algo in ("fgla", "gla") and route == "mel"
    if tol is None:
        return DEFAULT_TOL.get(cfg.name, 0.0) if joint else 0.0
    if tol < 0:
        raise UsageError(f"--tol {tol}: a relative improvement, >= 0 (0: run every iteration)")
    if tol and not joint:
        raise UsageError(f"--tol stops joint mel inversion (--algo fgla/gla --project mel), "
                         f"not --algo {algo} --project {route}: leave --tol out, or set --iters")
    return tol


def check_route(algo: str, project: str, cfg: AudioConfig | None, init: str = "zeros") -> None:
    """Refuse, before any work, a phase route that cannot run (``cfg``: when known)."""
    if algo not in ALGOS:
        raise UsageError(f"unknown algorithm {algo!r}: choose one of {', '.join(ALGOS)}")
    if project not in PROJECTS:
        raise UsageError(f"unknown projection {project!r}: choose one of {', '.join(PROJECTS)}")
    if init not in INITS:
        raise UsageError(f"unknown initial phase {init!r}: choose one of {', '.join(INITS)}")
    if algo == "degli" and project == "mel":
        raise UsageError("--algo degli holds the magnitude fixed: use --project mag, or "
                         "--algo fgla/admm with --project mel")
    if algo == "admm" and cfg is not None and cfg.power != 1:
        raise UsageError(f"--algo admm is written for magnitude mels, and {cfg.name} is a power "
                         "mel (power = 2): use --algo fgla --project mel")


@dataclass(frozen=True)
class AlgoOptions:
    """The phase algorithms' own options; each algorithm is given only those it takes
    (:meth:`for_algo`), so a misspelled option is a ``TypeError``, not ignored."""
    momentum: float = 0.99              # fgla, the FGLA warm-up of degli, joint fgla
    weights: str | None = None          # degli: weights name or path (default: shipped)
    warmup: int | None = None           # degli: FGLA iterations before the blocks (default: card)
    steps: int = 3                      # joint multiplicative: rescalings per iteration
    tol: float = 0.0                    # joint multiplicative: stop an item that converged
    rho: float = 0.03                   # admm: penalty (chosen on the tuning set)
    lam: float = 1e6                    # admm: weight of the mel fit

    def for_algo(self, algo: str) -> dict:
        if algo == "fgla":
            return {"momentum": self.momentum}
        if algo == "degli":
            return {"weights": self.weights, "warmup": self.warmup, "momentum": self.momentum}
        return {}


@dataclass(frozen=True)
class Inverter:
    """A resolved mel -> magnitude method: ``weights`` (name or path) and ``sha256`` (what
    identifies its output: the weights' digest, ``+lobes`` when refined) for ``model``."""
    method: str
    weights: str | None = None
    sha256: str | None = None

    def record(self) -> dict:
        """How run records and store attributes name it."""
        return {"method": self.method, "weights": self.weights, "weights_sha256": self.sha256}


def resolve_inverter(method: str, weights: str | None, cfg: AudioConfig) -> Inverter:
    """The one resolution of ``--method`` / ``--weights``: an unknown method, weights for a
    method that takes none, or weights made for another audio config are refused before any
    work, naming what to change; ``model`` without weights picks the shipped ones for ``cfg``."""
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    if method != "model":
        if weights:
            raise UsageError(f"weights {weights!r} are for --method model, not {method}")
        return Inverter(method)
    from pipeline.io.weights import pick_for
    from pipeline.models.inverter import inverter_digest, load_invert_model
    weights = str(weights or pick_for(cfg, "PInvConvSkip"))
    load_invert_model(weights, cfg)          # fail early, naming a mismatching field
    return Inverter(method, weights, inverter_digest(weights))
