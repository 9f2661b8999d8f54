"""``probe``: a linear head on a frozen foundation backbone named in its library's own terms
(open_clip or timm: PE, SigLIP 2, MetaCLIP 2, DINOv2/v3, CLIP ...). The config names the
backbone (``backbone: LIB:MODEL[:PRETRAINED]`` or an alias of ``configs/backbones.yaml``) and
its feature ``layer`` (``embed``: the library's image embedding, the default; an open_clip
ViT's ``next_to_last``; or a block index, negative from the end); the features are
L2-normalised, then ``fc``. The preprocessing is the library's own eval transform for that
model, not the reference's 224-px crop. Heads on one backbone share its pass, whatever their
layers, with every other head that reads the same preprocessing."""

from clipdet.models.families import BuildContext, Family, register_family
from clipdet.models.registry import parse_backbone
from networks import EMBED, Attributor, Detector

ARCH = "probe"


def parse_layer(value) -> str | int:
    """A feature layer as a config or a command line gives it: ``embed``, ``next_to_last`` or
    a block index (``-2`` and ``"-2"`` alike)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        return text


def _build(arch: str, context: BuildContext):
    backbone = parse_backbone(context.config.require("backbone"))
    layer = parse_layer(context.config.get("layer", EMBED))
    try:
        frozen = context.backbone_cache.layer(backbone, layer)
    except ValueError as e:
        raise ValueError(f"model {context.name!r}: {e}") from e
    if context.attribution is not None:
        classes = context.attribution.classes
        return Attributor(frozen.module, frozen.width, frozen.identity, classes, frozen.layer)
    return Detector(
        frozen.module, frozen.width, frozen.identity, frozen_backbone=True, layer=frozen.layer
    )


def _preprocessing(arch: str, config: dict, detector):
    from clipdet.models.backbones import backbone_preprocessing

    return backbone_preprocessing(parse_backbone(config.require("backbone")), detector.backbone)


register_family(
    Family(
        name="probe",
        pattern=f"{ARCH} (with backbone: LIB:MODEL[:PRETRAINED] and layer: embed | K)",
        parse=lambda arch: arch if arch == ARCH else None,
        build=_build,
        preprocessing=_preprocessing,
        shared_frozen_backbone=True,
        config_keys=("backbone",),
    )
)
