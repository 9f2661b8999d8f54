"""Detector architectures, named as in the reference code's `arch` config key. Architectures
only: they take a model name and a state dict; finding and loading checkpoints is clipdet's."""

from .detector import Attributor, Detector
from .five_crop_vit import FiveCropViT
from .frozen_features import BLOCK_NORMS, EMBED, NEXT_TO_LAST, FrozenFeatures
from .openclip_features import OpenClipFeatures, build_visual_tower, openclip_features
from .peer_heads import ConceptBottleneckHead, RineHead
from .resnet_nodown import ResNetNoDownFeatures
from .timm_classifier import TimmClassifier
from .timm_features import TimmFeatures, timm_features

__all__ = [
    "Attributor",
    "BLOCK_NORMS",
    "ConceptBottleneckHead",
    "Detector",
    "EMBED",
    "FiveCropViT",
    "FrozenFeatures",
    "NEXT_TO_LAST",
    "OpenClipFeatures",
    "ResNetNoDownFeatures",
    "RineHead",
    "TimmClassifier",
    "TimmFeatures",
    "build_visual_tower",
    "openclip_features",
    "timm_features",
]
