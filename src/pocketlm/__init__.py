"""pocketlm: build small language models that run fast on phones and laptops."""

from pocketlm.model.config import ModelConfig
from pocketlm.errors import UserError

__version__ = "0.1.0"
__all__ = ["ModelConfig", "UserError", "__version__"]
