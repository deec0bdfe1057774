"""Stage 3: magnitude -> waveform (GLA, FGLA, DeGLI)."""
from .gla import fgla, gla, griffin_lim  # noqa: F401
from .stage import ALGOS, phase, reconstruct  # noqa: F401
