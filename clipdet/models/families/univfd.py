"""``univfd_<backbone>``: UnivFD (Ojha et al., CVPR 2023), the projected image features of a
frozen CLIP tower, *not* normalised, and a linear layer; its published head is
``fc_weights.pth`` with the keys ``weight`` and ``bias``. It reads a 224-px centre crop without
resizing (``patch_size: 224``), as UnivFD's ``validate.py`` does. It shares the backbone's
pass with any other head on the same CLIP model."""

from clipdet.models.families import (
    BuildContext,
    frozen_detector,
    register_head_family,
)
from networks import EMBED

PREFIX = "univfd_"
UNIVFD_CROP = 224


def _build(backbone: str, context: BuildContext):
    return frozen_detector(context, backbone, EMBED, normalize_features=False)


def _convert(state: dict) -> dict:
    """UnivFD's ``{'weight', 'bias'}`` (its ``fc``) -> ``fc.weight``, ``fc.bias``."""
    if set(state) == {"weight", "bias"}:
        return {f"fc.{key}": value for key, value in state.items()}
    return state


register_head_family("univfd", PREFIX, _build, UNIVFD_CROP, _convert)
