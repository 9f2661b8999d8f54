"""``opencliplinearnext_<backbone>`` and ``opencliplinear_<backbone>``: a frozen open_clip image
tower (next-to-last or projected features, L2-normalised; with a ``block`` key, the CLS token of
that transformer block) and a linear head; the paper's CLIP detectors and the heads ``clipdet
train`` writes on them, attribution models included."""

from clipdet.models.families import BuildContext, Family, config_preprocessing, register_family
from networks import Attributor, Detector, parse_arch


def _parse(arch: str):
    try:
        spec = parse_arch(arch)
    except ValueError:
        return None
    return spec if spec.family == "openclip" else None


def _build(spec, context: BuildContext):
    attribution = context.attribution
    block = context.config.get("block")  # the CLS token of that transformer block
    layer = context.backbone_cache.get(spec.backbone, spec.layer if block is None else block)
    if attribution is not None:
        return Attributor(
            layer.module, layer.width, layer.identity, attribution.classes, layer.layer
        )
    return Detector(
        layer.module, layer.width, layer.identity, frozen_backbone=True, layer=layer.layer
    )


register_family(
    Family(
        name="openclip",
        pattern="opencliplinearnext_<backbone> / opencliplinear_<backbone>",
        parse=_parse,
        build=_build,
        preprocessing=config_preprocessing,
        attribution=True,
        config_keys=("norm_type", "patch_size"),
    )
)
