"""Detector architectures, named as in the reference code's `arch` config key. Architectures
only: they take a model name and a state dict; finding and loading checkpoints is clipdet's."""

from dataclasses import dataclass

from .detector import Attributor, Detector
from .five_crop_vit import FiveCropViT
from .frozen_features import EMBED, NEXT_TO_LAST, FrozenFeatures
from .openclip_features import OpenClipFeatures, build_visual_tower, openclip_features
from .resnet_nodown import ResNetNoDownFeatures
from .timm_features import TimmFeatures, timm_features

__all__ = [
    "ArchSpec",
    "Attributor",
    "Detector",
    "EMBED",
    "FiveCropViT",
    "FrozenFeatures",
    "NEXT_TO_LAST",
    "OpenClipFeatures",
    "RESNET_ARCHS",
    "ResNetNoDownFeatures",
    "TimmFeatures",
    "build_visual_tower",
    "openclip_features",
    "parse_arch",
    "timm_features",
]

# arch prefix -> use the features before the visual projection (next-to-last layer)?
OPENCLIP_PREFIXES = {"opencliplinearnext_": True, "opencliplinear_": False}
RESNET_ARCHS = ("res50nodown",)


@dataclass(frozen=True)
class ArchSpec:
    family: str  # "openclip" or "resnet"
    backbone: str | None = None  # registry name of the CLIP backbone
    next_to_last: bool = False

    @property
    def layer(self) -> str:
        """The feature layer of an opencliplinear* arch: next-to-last or the embedding."""
        return NEXT_TO_LAST if self.next_to_last else EMBED


def parse_arch(arch: str) -> ArchSpec:
    """Split an arch name: ``opencliplinearnext_<backbone>``, ``opencliplinear_<backbone>`` or
    ``res50nodown``."""
    for prefix, next_to_last in OPENCLIP_PREFIXES.items():
        if arch.startswith(prefix) and len(arch) > len(prefix):
            return ArchSpec("openclip", arch.removeprefix(prefix), next_to_last)
    if arch in RESNET_ARCHS:
        return ArchSpec("resnet")
    valid = [f"{p}<backbone>" for p in OPENCLIP_PREFIXES] + list(RESNET_ARCHS)
    raise ValueError(f"unknown arch {arch!r}; valid choices: {', '.join(valid)}")
