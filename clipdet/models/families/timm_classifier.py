"""``timmclassifier_<timm model>``: a timm classifier fine-tuned whole with one output
(Community Forensics, Park & Owens, CVPR 2025: ``vit_small_patch16_384``), as
``networks.TimmClassifier``. Its checkpoint is the peer's module (``vit.*``: timm's model,
``vit.head.*`` its head) or timm's own keys (``head.*``). The preprocessing is the config's
``patch_size`` and ``norm_type`` (Community Forensics: ``Resize440Crop384Bilinear``, ImageNet
statistics); ``timm_kwargs`` are passed to ``timm.create_model``."""

from clipdet.models.families import (
    BuildContext,
    Family,
    config_preprocessing,
    prefixed,
    register_family,
)
from networks import Detector, TimmClassifier

PREFIX = "timmclassifier_"


def _build(model: str, context: BuildContext):
    kwargs = context.config.get("timm_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ValueError(f"model {context.name!r}: timm_kwargs must be a mapping, got {kwargs!r}")
    try:
        backbone = TimmClassifier(model, **kwargs)
    except RuntimeError as e:  # timm: unknown model name
        raise ValueError(f"model {context.name!r}: {e}") from e
    return Detector(backbone, backbone.num_features, f"{context.name}:{context.weights_path}")


def _convert(state: dict) -> dict:
    """``vit.head.*`` (or timm's ``head.*``) -> ``fc.*``; the rest -> the backbone's ``model.*``."""
    converted = {}
    for key, value in state.items():
        key = key.removeprefix("vit.")
        converted["fc." + key.removeprefix("head.") if key.startswith("head.")
                  else "model." + key] = value  # fmt: skip
    return converted


register_family(
    Family(
        name="timm_classifier",
        pattern=f"{PREFIX}<timm model>",
        parse=prefixed(PREFIX),
        build=_build,
        preprocessing=config_preprocessing,
        convert_state_dict=_convert,
        config_keys=("norm_type", "patch_size"),
    )
)
