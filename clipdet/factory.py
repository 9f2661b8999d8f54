"""One factory: model name -> Detector built from `<weights_dir>/<name>/config.yaml`."""

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from networks import Detector, ResNetNoDownFeatures, create_openclip_features, parse_arch

from .preprocess import ImageTransform, make_transform, transform_key
from .registry import get_backbone
from .weights import load_model_config, load_state_dict, resolve_weights_file

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A ready detector with the preprocessing its config asks for."""

    name: str
    detector: Detector
    transform_key: str
    transform: ImageTransform
    config: dict


class BackboneCache:
    """Frozen backbones by identity, so that several heads on one backbone share one module."""

    def __init__(self, backbone_weights: str | os.PathLike | None = None):
        self.backbone_weights = backbone_weights
        self._modules: dict[str, nn.Module] = {}

    def get(self, backbone: str, next_to_last: bool) -> tuple[str, nn.Module]:
        layer = "next_to_last" if next_to_last else "projected"
        key = f"{backbone}:{layer}:{self.backbone_weights or 'pretrained'}"
        if key not in self._modules:
            self._modules[key] = create_openclip_features(
                get_backbone(backbone), next_to_last=next_to_last, checkpoint=self.backbone_weights
            )
        return key, self._modules[key]


def create_detector(
    name: str,
    weights_dir: str | os.PathLike = "weights",
    backbone_cache: BackboneCache | None = None,
) -> LoadedModel:
    """Build the detector ``name`` from its config, load its weights (downloading a known
    detector's official weights on first use) and return it with its transform, in eval mode."""
    config = load_model_config(name, weights_dir)
    arch = parse_arch(config["arch"])
    key = transform_key(config["patch_size"], config["norm_type"])
    weights_path = resolve_weights_file(name, config, weights_dir)
    state = load_state_dict(weights_path)
    if arch.family == "openclip":
        cache = backbone_cache or BackboneCache()
        backbone_key, backbone = cache.get(arch.backbone, arch.next_to_last)
        detector = Detector(backbone, backbone.num_features, backbone_key)
    else:
        backbone = ResNetNoDownFeatures()
        backbone_key = f"{name}:{Path(weights_path).resolve()}"
        detector = Detector(backbone, backbone.num_features, backbone_key)
    try:
        detector.load_reference_state_dict(state, frozen_backbone=arch.family == "openclip")
    except ValueError as e:
        raise ValueError(f"model {name!r} ({weights_path}): {e}") from e
    logger.info("model %s: arch %s, preprocessing %s", name, config["arch"], key)
    return LoadedModel(
        name=name,
        detector=detector.eval(),
        transform_key=key,
        transform=make_transform(config["patch_size"], config["norm_type"]),
        config=config,
    )
