"""``univfd_<backbone>``: UnivFD (Ojha et al., CVPR 2023), the projected image features of a
frozen CLIP tower, *not* normalised, and a linear layer; its published head is
``fc_weights.pth`` with the keys ``weight`` and ``bias``. It reads a 224-px centre crop without
resizing (``patch_size: 224``), as UnivFD's ``validate.py`` does. It shares the backbone's
pass with any other head on the same CLIP model."""

from clipdet.models.families import BuildContext, Family, register_family
from clipdet.models.preprocess import reference_preprocessing
from networks import EMBED, Detector

PREFIX = "univfd_"
UNIVFD_CROP = 224


def _build(backbone: str, context: BuildContext):
    layer = context.backbone_cache.get(backbone, EMBED)
    return Detector(
        layer.module, layer.width, layer.identity, frozen_backbone=True, layer=layer.layer,
        normalize_features=False,
    )  # fmt: skip


def _parse(arch: str) -> str | None:
    """The backbone's registry name in ``univfd_<backbone>``."""
    backbone = arch.removeprefix(PREFIX)
    return backbone if arch.startswith(PREFIX) and backbone else None


def _convert(state: dict) -> dict:
    """UnivFD's ``{'weight', 'bias'}`` (its ``fc``) -> ``fc.weight``, ``fc.bias``."""
    if set(state) == {"weight", "bias"}:
        return {f"fc.{key}": value for key, value in state.items()}
    return state


register_family(
    Family(
        name="univfd",
        pattern=f"{PREFIX}<backbone>",
        parse=_parse,
        build=_build,
        preprocessing=lambda spec, config, detector: reference_preprocessing(
            config.get("patch_size", UNIVFD_CROP), config.require("norm_type")
        ),
        convert_state_dict=_convert,
        config_keys=("norm_type",),
    )
)
