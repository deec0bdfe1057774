"""Stage 2: mel -> linear STFT magnitude (pinv, nnls, or the learned model)."""
from .methods import METHODS, nnls, pinv  # noqa: F401
from .model import model_invert  # noqa: F401  (registers "model")
from .stage import invert  # noqa: F401
