"""``opencliplinearnext_<backbone>`` and ``opencliplinear_<backbone>``: a frozen open_clip image
tower (next-to-last or projected features, L2-normalised; with a ``block`` key, the CLS token of
that transformer block) and a linear head; the paper's CLIP detectors and the heads ``clipdet
train`` writes on them, attribution models included."""

from dataclasses import dataclass

from clipdet.models.families import BuildContext, Family, config_preprocessing, register_family
from networks import EMBED, NEXT_TO_LAST, Attributor, Detector

# arch prefix -> whether the head reads the features before the visual projection
PREFIXES = {"opencliplinearnext_": True, "opencliplinear_": False}


@dataclass(frozen=True)
class OpenClipArch:
    """An ``opencliplinear*`` arch: the registry name of its CLIP backbone and its layer."""

    backbone: str
    next_to_last: bool

    @property
    def layer(self) -> str:
        return NEXT_TO_LAST if self.next_to_last else EMBED


def parse_arch(arch: str) -> OpenClipArch | None:
    for prefix, next_to_last in PREFIXES.items():
        if arch.startswith(prefix) and len(arch) > len(prefix):
            return OpenClipArch(arch.removeprefix(prefix), next_to_last)
    return None


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
        parse=parse_arch,
        build=_build,
        preprocessing=config_preprocessing,
        shared_frozen_backbone=True,
        config_keys=("norm_type", "patch_size"),
    )
)
