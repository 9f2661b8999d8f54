"""One factory: model name -> Detector (or Attributor) built from
`<weights_dir>/<name>/config.yaml`."""

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from clipdet.constants import ATTRIBUTION_TASK, CLIP224, CLIP_NORM, DETECTION_TASK
from clipdet.models.attribution import AttributionSpec
from clipdet.models.backbones import create_openclip_features
from clipdet.models.families import BuildContext, find_family
from clipdet.models.preprocess import ImageTransform, make_transform, transform_key
from clipdet.models.registry import get_backbone
from clipdet.models.weights import load_model_config, load_state_dict, resolve_weights_file
from clipdet.pipeline.infer import FeatureGroup
from networks import Detector, parse_arch

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A ready detector with the preprocessing its config asks for."""

    name: str
    detector: Detector
    transform_key: str
    transform: ImageTransform
    config: dict
    weights_path: Path
    attribution: AttributionSpec | None = None  # set for attribution models

    @property
    def task(self) -> str:
        return DETECTION_TASK if self.attribution is None else ATTRIBUTION_TASK


@dataclass(frozen=True)
class FrozenLayer:
    """One feature layer of a shared, pretrained backbone: ``layer`` None is the module's
    output, an int the (non-negative) index of the transformer block whose CLS token is read;
    ``identity`` names model, weights and layer, and keys the feature cache."""

    identity: str
    module: nn.Module
    layer: int | None

    @property
    def width(self) -> int:
        return self.module.layer_width(self.layer)


class BackboneCache:
    """Frozen backbones by identity, so that several heads on one backbone share one module."""

    def __init__(self, backbone_weights: str | os.PathLike | None = None):
        self.backbone_weights = backbone_weights
        self._modules: dict[str, nn.Module] = {}

    def get(self, backbone: str, next_to_last: bool, block: int | None = None) -> FrozenLayer:
        """The layer's identity is e.g. ``ViT-L-14|commonpool_xl_s13b_b90k|next_to_last``.
        With ``block`` K (negative: from the end) the layer is the CLS token of transformer
        block K, read from the same (next-to-last) module, so that those features come from
        the detectors' pass."""
        spec = get_backbone(backbone)
        base = f"{spec.model}|{self._weights_identity(spec)}"
        if block is not None:
            next_to_last = True
        key = f"{base}|{'next_to_last' if next_to_last else 'projected'}"
        if key not in self._modules:
            self._modules[key] = create_openclip_features(
                spec, next_to_last=next_to_last, checkpoint=self.backbone_weights
            )
            self._modules[key].cache_key = key  # names it alike in every process
        module = self._modules[key]
        if block is None:
            return FrozenLayer(key, module, None)
        block = module.check_block(block)
        return FrozenLayer(f"{base}|block{block}", module, block)

    def _weights_identity(self, spec) -> str:
        if not self.backbone_weights:
            return spec.pretrained or spec.hf_hub or "none"
        path = Path(self.backbone_weights).resolve()
        try:
            stat = path.stat()
        except OSError:
            return f"file:{path}"
        return f"file:{path}:{stat.st_size}:{stat.st_mtime_ns}"


def create_detector(
    name: str,
    weights_dir: str | os.PathLike = "weights",
    backbone_cache: BackboneCache | None = None,
) -> LoadedModel:
    """Build the detector ``name`` from its config: its ``arch`` names a registered family
    (``clipdet.models.families``), which builds the network, says which preprocessing it reads
    and maps the weights file onto it. The weights of a known detector are downloaded on first
    use. Returns the model with its transform, in eval mode."""
    config = load_model_config(name, weights_dir)
    family, spec = find_family(config["arch"])
    is_detector = config.get("task", DETECTION_TASK) == DETECTION_TASK
    attribution = None if is_detector else AttributionSpec.from_config(config)
    if attribution is not None and not family.attribution:
        raise ValueError(f"model {name!r}: attribution models need an opencliplinear* arch")
    weights_path = resolve_weights_file(name, config, weights_dir)
    context = BuildContext(
        name, config, weights_path, backbone_cache or BackboneCache(), attribution
    )
    detector = family.build(spec, context)
    patch_size, norm_type = family.preprocessing(spec, config, detector)
    key = transform_key(patch_size, norm_type)
    # memory-mapped: tensors the model does not use (Corvi2023's file also holds its Adam
    # state, twice the weights) are never read from disk
    state = family.convert_state_dict(load_state_dict(weights_path, mmap=True))
    try:
        detector.load_reference_state_dict(state)
    except ValueError as e:
        raise ValueError(f"model {name!r} ({weights_path}): {e}") from e
    logger.info("model %s: arch %s, preprocessing %s", name, config["arch"], key)
    return LoadedModel(
        name=name,
        detector=detector.eval(),
        transform_key=key,
        transform=make_transform(patch_size, norm_type),
        config=config,
        weights_path=Path(weights_path),
        attribution=attribution,
    )


def create_frozen_feature_group(
    arch: str,
    norm_type: str = CLIP_NORM,
    patch_size=CLIP224,
    backbone_cache: BackboneCache | None = None,
    block: int | None = None,
) -> tuple[FeatureGroup, ImageTransform]:
    """The frozen CLIP backbone of an ``opencliplinear*`` arch with its preprocessing, for
    training heads on its features (``block`` K: the CLS token of transformer block K)."""
    spec = parse_arch(arch)
    if spec.family != "openclip":
        raise ValueError(
            "heads are trained on frozen CLIP features: arch must be "
            f"opencliplinearnext_<backbone> or opencliplinear_<backbone>, got {arch!r}"
        )
    key = transform_key(patch_size, norm_type)
    f = (backbone_cache or BackboneCache()).get(spec.backbone, spec.next_to_last, block)
    group = FeatureGroup.frozen(f.module, f.identity, key, f.layer)
    return group, make_transform(patch_size, norm_type)
