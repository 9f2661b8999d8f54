"""``res50nodown``: Corvi et al. (ICASSP 2023), a ResNet-50 without down-sampling in its first
layer, read at full resolution (tiled beyond a size) with a linear head."""

from pathlib import Path

from clipdet.models.families import BuildContext, Family, config_preprocessing, register_family
from networks import Detector, ResNetNoDownFeatures

RESNET_ARCHS = ("res50nodown",)


def _build(spec, context: BuildContext):
    backbone = ResNetNoDownFeatures()
    key = f"{context.name}:{Path(context.weights_path).resolve()}"
    return Detector(backbone, backbone.num_features, key)


register_family(
    Family(
        name="resnet",
        pattern=" / ".join(RESNET_ARCHS),
        parse=lambda arch: arch if arch in RESNET_ARCHS else None,
        build=_build,
        preprocessing=config_preprocessing,
        config_keys=("norm_type", "patch_size"),
    )
)
