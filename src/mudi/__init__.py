"""mudi: multi-subject personalization of text-to-image diffusion models without identity mixing.

Implements MuDI (Jang et al., NeurIPS 2024): Seg-Mix training, mean-shifted initial latents and the
Detect-and-Compare metric. ``import mudi`` is light: model libraries load only when a workflow needs them.
"""

__version__ = "0.1.0"

from mudi.errors import MudiError  # noqa: E402

__all__ = ["MudiError", "__version__"]
