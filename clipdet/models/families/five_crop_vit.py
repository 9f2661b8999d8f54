"""``timm_c5i<size>_<timm model>``: B-Free (Guillaro et al., CVPR 2025), a timm ViT reading five
``size``-px grids of the whole image's patch embedding, the score being the mean of the five
logits (``networks.five_crop_vit``). The released model is ``BFREE_dino2reg4``
(``timm_c5i504_vit_base_patch14_reg4_dinov2``, one output). Its checkpoint is ``{'model':
state}``: ``patch_embed.*`` is the patch embedding, ``head.*`` the linear head and the rest the
ViT. Preprocessing is only ToTensor and the ``norm_type`` normalisation: no resize. An optional
config key ``timm_kwargs`` is passed to ``timm.create_model`` (e.g. a smaller ViT)."""

import re
from dataclasses import dataclass

from clipdet.models.families import BuildContext, Family, register_family
from clipdet.models.preprocess import five_crops_spec, reference_preprocessing
from networks import Detector, FiveCropViT

ARCH = re.compile(r"^timm_c5i(\d+)_(.+)$")


@dataclass(frozen=True)
class FiveCropSpec:
    input_size: int
    timm_model: str


def _parse(arch: str) -> FiveCropSpec | None:
    match = ARCH.match(arch)
    return FiveCropSpec(int(match[1]), match[2]) if match else None


def _build(spec: FiveCropSpec, context: BuildContext):
    kwargs = context.config.get("timm_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ValueError(f"model {context.name!r}: timm_kwargs must be a mapping, got {kwargs!r}")
    try:
        backbone = FiveCropViT(spec.timm_model, spec.input_size, **kwargs)
    except RuntimeError as e:  # timm: unknown model name
        raise ValueError(f"model {context.name!r}: {e}") from e
    return Detector(backbone, backbone.num_features, f"{context.name}:{context.weights_path}")


def _convert(state: dict) -> dict:
    """B-Free's layout -> the reference layout: ``head.*`` -> ``fc.*``, ``patch_embed.*``
    kept, every other key under ``vit.``."""
    converted = {}
    for key, value in state.items():
        if key.startswith("head."):
            converted["fc." + key.removeprefix("head.")] = value
        elif key.startswith(("patch_embed.", "fc.", "vit.")):
            converted[key] = value
        else:
            converted["vit." + key] = value
    return converted


register_family(
    Family(
        name="five_crop_vit",
        pattern="timm_c5i<size>_<timm model>",
        parse=_parse,
        build=_build,
        preprocessing=lambda spec, config, detector: reference_preprocessing(
            five_crops_spec(spec.input_size, detector.backbone.patch_size),
            config.require("norm_type"),
        ),
        convert_state_dict=_convert,
        config_keys=("norm_type",),
    )
)
