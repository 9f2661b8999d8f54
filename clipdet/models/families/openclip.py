"""``opencliplinearnext_<backbone>`` and ``opencliplinear_<backbone>``: a frozen open_clip image
tower (next-to-last or projected features, L2-normalised) and a linear head; the paper's CLIP
detectors and every head ``clipdet train`` writes, attribution models included."""

from clipdet.models.families import BuildContext, Family, config_value, register_family
from networks import Attributor, Detector, parse_arch


def _parse(arch: str):
    try:
        spec = parse_arch(arch)
    except ValueError:
        return None
    return spec if spec.family == "openclip" else None


def _build(spec, context: BuildContext):
    attribution = context.attribution
    layer = context.backbone_cache.get(
        spec.backbone, spec.next_to_last, attribution.block if attribution else None
    )
    if attribution is not None:
        return Attributor(
            layer.module, layer.width, layer.identity, attribution.classes, layer.layer
        )
    return Detector(layer.module, layer.width, layer.identity, frozen_backbone=True)


register_family(
    Family(
        name="openclip",
        pattern="opencliplinearnext_<backbone> / opencliplinear_<backbone>",
        parse=_parse,
        build=_build,
        preprocessing=lambda spec, config, detector: (
            config_value(config, "patch_size"),
            config["norm_type"],
        ),
        attribution=True,
    )
)
