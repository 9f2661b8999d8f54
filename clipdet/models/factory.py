"""One factory: model name -> Detector (or Attributor) built from
`<weights_dir>/<name>/config.yaml`."""

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from clipdet.constants import ATTRIBUTION_TASK, DETECTION_TASK
from clipdet.models.attribution import AttributionSpec
from clipdet.models.backbones import create_frozen_features
from clipdet.models.families import BuildContext, find_family
from clipdet.models.model_config import ModelConfig
from clipdet.models.preprocess import ImageTransform, PreprocessCfg, Preprocessing
from clipdet.models.registry import OPEN_CLIP, BackboneSpec, get_backbone
from clipdet.models.weights import load_model_config, load_state_dict, resolve_weights_file
from networks import EMBED, Detector, FrozenFeatures

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A ready detector with the preprocessing its config asks for."""

    name: str
    detector: Detector
    preprocess: PreprocessCfg  # what its input is, declared
    transform: ImageTransform  # made from ``preprocess``
    config: ModelConfig
    weights_path: Path
    attribution: AttributionSpec | None = None  # set for attribution models

    @property
    def transform_key(self) -> str:
        """The key under which models share a preprocessing (and its decoded tensors)."""
        return self.preprocess.key

    @property
    def input_size(self) -> int | None:
        """The side of the input its preprocessing makes (None: the whole image)."""
        return self.preprocess.size

    @property
    def task(self) -> str:
        return DETECTION_TASK if self.attribution is None else ATTRIBUTION_TASK


@dataclass(frozen=True)
class FrozenLayer:
    """One feature layer of a shared, pretrained backbone (``networks.frozen_features``: a
    name or a non-negative block index); ``identity`` names model, weights and layer, and
    keys the feature cache."""

    identity: str
    module: FrozenFeatures
    layer: str | int

    @property
    def width(self) -> int:
        return self.module.layer_width(self.layer)


class BackboneCache:
    """Frozen backbones by model and weights, so that every head on one backbone, whatever its
    layer, shares one module (and one forward pass). ``backbone_weights``: a local weights
    file for every backbone of the run named by a pretrained tag (one that names its own file
    reads that file)."""

    def __init__(self, backbone_weights: str | os.PathLike | None = None):
        self.backbone_weights = backbone_weights
        self._modules: dict[str, FrozenFeatures] = {}

    def get(self, backbone: str, layer: str | int) -> FrozenLayer:
        """A layer of the open_clip backbone of an ``opencliplinear*_<backbone>`` arch."""
        return self.layer(get_backbone(backbone), layer)

    def layer(self, spec: BackboneSpec, layer: str | int) -> FrozenLayer:
        """Layer ``layer`` of backbone ``spec`` (a block index may be negative). Its identity
        is e.g. ``ViT-L-14|commonpool_xl_s13b_b90k|next_to_last`` or ``...|block12``."""
        module = self.module(spec)
        layer = module.check_layer(layer)
        return FrozenLayer(f"{module.cache_key}|{_layer_word(spec, layer)}", module, layer)

    def module(self, spec: BackboneSpec) -> FrozenFeatures:
        key = self.module_key(spec)
        if key not in self._modules:
            module = create_frozen_features(spec, self._weights_file(spec))
            module.cache_key = key  # names it alike in every process
            self._modules[key] = module
        return self._modules[key]

    def module_key(self, spec: BackboneSpec) -> str:
        # open_clip's keys have no library prefix: calibration files record these identities
        library = "" if spec.library == OPEN_CLIP else f"{spec.library}:"
        return f"{library}{spec.model}|{self._weights_identity(spec)}"

    def _weights_file(self, spec: BackboneSpec) -> str | os.PathLike | None:
        return spec.file or self.backbone_weights

    def _weights_identity(self, spec: BackboneSpec) -> str:
        file = self._weights_file(spec)
        if not file:
            return spec.pretrained or spec.hf_hub or "default"
        path = Path(file).resolve()
        try:
            stat = path.stat()
        except OSError:
            return f"file:{path}"
        return f"file:{path}:{stat.st_size}:{stat.st_mtime_ns}"


def _layer_word(spec: BackboneSpec, layer: str | int) -> str:
    """The layer's name in an identity; open_clip's embedding is "projected" (calibration
    files and feature caches record these identities)."""
    if isinstance(layer, int):
        return f"block{layer}"
    return "projected" if layer == EMBED and spec.library == OPEN_CLIP else layer


def create_detector(
    name: str,
    weights_dir: str | os.PathLike = "weights",
    backbone_cache: BackboneCache | None = None,
) -> LoadedModel:
    """Build the detector ``name`` from its config: its ``arch`` names a registered family
    (``clipdet.models.families``), which builds the network, says which preprocessing it reads
    and maps the weights file onto it. The weights of a known detector are downloaded on first
    use. Returns the model with its transform, in eval mode."""
    config = load_model_config(name, weights_dir, lambda arch: find_family(arch)[0].config_keys)
    family, spec = find_family(config.arch)
    is_detector = config.task == DETECTION_TASK
    attribution = None if is_detector else AttributionSpec.from_config(config)
    if attribution is not None and not family.shared_frozen_backbone:
        raise ValueError(
            f"model {name!r}: attribution models need a frozen-backbone arch "
            "(opencliplinear*, probe)"
        )
    weights_path = resolve_weights_file(name, config, weights_dir)
    context = BuildContext(
        name, config, weights_path, backbone_cache or BackboneCache(), attribution
    )
    detector = family.build(spec, context)
    preprocessing = family.preprocessing(spec, config, detector)
    # memory-mapped: tensors the model does not use (Corvi2023's file also holds its Adam
    # state, twice the weights) are never read from disk
    state = family.convert_state_dict(load_state_dict(weights_path, mmap=True))
    try:
        detector.load_reference_state_dict(state)
    except ValueError as e:
        raise ValueError(f"model {name!r} ({weights_path}): {e}") from e
    logger.info("model %s: arch %s, preprocessing %s", name, config.arch, preprocessing.key)
    return LoadedModel(
        name=name,
        detector=detector.eval(),
        preprocess=preprocessing.cfg,
        transform=preprocessing.transform,
        config=config,
        weights_path=Path(weights_path),
        attribution=attribution,
    )


def create_frozen_network(
    config: ModelConfig | Mapping, backbone_cache: BackboneCache | None = None
) -> tuple[Detector, Preprocessing]:
    """The network of a frozen-backbone model ``config`` (``opencliplinear*`` with its
    ``norm_type`` and ``patch_size``, or ``probe`` with its ``backbone`` and ``layer``; a
    mapping as training writes it) with its preprocessing and an untrained head: what training
    computes features with, the same network and transform that scoring the trained model
    runs."""
    if not isinstance(config, ModelConfig):
        config = ModelConfig.from_mapping(config)
    family, spec = find_family(config.arch)
    if (
        not family.shared_frozen_backbone
    ):  # the families whose heads sit on a shared frozen backbone
        raise ValueError(
            "heads are trained on frozen CLIP features or a probe's backbone: arch must be "
            f"opencliplinearnext_<backbone>, opencliplinear_<backbone> or probe, got "
            f"{config.arch!r}"
        )
    context = BuildContext(config.model_name, config, None, backbone_cache or BackboneCache())
    detector = family.build(spec, context)
    return detector.eval(), family.preprocessing(spec, config, detector)
