"""pipeline: speech reconstruction from mel spectrograms, at corpus scale.

Stages (each a plain function; the ``pipeline`` CLI is a thin layer over them):
``extract`` audio -> mel store, ``invert`` mel -> magnitude, ``phase`` magnitude -> waveform,
``score`` waveforms -> metrics.
"""
__version__ = "0.1.0"
SCHEMA_VERSION = 1
