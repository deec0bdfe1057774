"""pipeline: speech reconstruction from mel spectrograms, at corpus scale.

Stages (each a plain function; the ``pipeline`` CLI is a thin layer over them)::

    from pipeline import load_config, extract, invert, phase, score, vocode

``extract`` audio -> mel store, ``invert`` mel -> magnitude, ``phase`` magnitude -> waveform,
``score`` waveforms -> metrics, ``vocode`` a folder of TTS mels -> waveforms. They are
imported on first use, so ``import pipeline`` stays cheap.

Layout: ``stages/`` (the data flow above), ``dsp/`` (mel, STFT, spectral distances),
``synthesis/`` (inversion and reconstruction of utterances in memory, the route policy),
``algorithms/`` (pinv, NNLS, Griffin-Lim family, joint mel inversion), ``models/`` (the
inverter and DeGLI nets), ``train/`` (one trainer), ``metrics/``, ``parallel/`` (dask, SLURM),
``io/`` (audio, manifests, store, weights, results), ``recipes/`` (corpus recipes),
``presets/`` and ``pretrained/``.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
SCHEMA_VERSION = 2   # 2: the shard plan in its own group (plan/), not the root's attrs

_API = {"load_config": "pipeline.config", "extract": "pipeline.stages.extract",
        "invert": "pipeline.stages.invert", "phase": "pipeline.stages.phase",
        "score": "pipeline.stages.score", "vocode": "pipeline.stages.vocode"}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
