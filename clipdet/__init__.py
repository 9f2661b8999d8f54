"""clipdet: batch detection of AI-generated images with frozen CLIP features and linear heads."""

__version__ = "0.1.0"

from .factory import BackboneCache, LoadedModel, create_detector  # noqa: E402
from .fusion import apply_fusion  # noqa: E402
from .registry import register_backbone  # noqa: E402
from .scoring import iter_scores, load_models, score_images  # noqa: E402

__all__ = [
    "BackboneCache",
    "LoadedModel",
    "apply_fusion",
    "create_detector",
    "iter_scores",
    "load_models",
    "register_backbone",
    "score_images",
]
