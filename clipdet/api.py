"""The Python API in one import: ``from clipdet.api import score_images``."""

from clipdet.evaluation.attribution_metrics import evaluate_attribution
from clipdet.models.factory import BackboneCache, LoadedModel, create_detector
from clipdet.models.registry import register_backbone
from clipdet.pipeline.fusion import apply_fusion
from clipdet.pipeline.scoring import iter_scores, load_models, score_images
from clipdet.training.attributor import train_attributor
from clipdet.training.detector import train_detector
from clipdet.training.splits import split_open_set

__all__ = [
    "BackboneCache",
    "LoadedModel",
    "apply_fusion",
    "create_detector",
    "evaluate_attribution",
    "iter_scores",
    "load_models",
    "register_backbone",
    "score_images",
    "split_open_set",
    "train_attributor",
    "train_detector",
]
