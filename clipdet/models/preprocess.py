"""Image transforms derived from a model config's `patch_size` and `norm_type`.

Models that share a transform share one entry (`transform_key`), so an image decoded once is
transformed once per distinct preprocessing, not once per model.
"""

from collections.abc import Callable
from typing import Any

import torch
from PIL import Image
from torchvision import transforms as T

from clipdet.constants import CLIP224, CLIP_INPUT_SIZE, NORMALIZATION

ImageTransform = Callable[[Image.Image], torch.Tensor]


def transform_key(patch_size: Any, norm_type: str) -> str:
    """A hashable name for a preprocessing, e.g. ``Clip224_clip`` or ``full_resnet``."""
    _check_norm_type(norm_type)
    if patch_size is None:
        return f"full_{norm_type}"
    if patch_size == CLIP224:
        return f"{CLIP224}_{norm_type}"
    if isinstance(patch_size, int) and not isinstance(patch_size, bool) and patch_size > 0:
        return f"crop{patch_size}_{norm_type}"
    raise ValueError(
        f"unsupported patch_size {patch_size!r}; use null (full image), {CLIP224!r} "
        "or a positive integer (centre crop)"
    )


def is_full_resolution(key: str) -> bool:
    """True for transforms that keep the image size (such tensors cannot be stacked freely)."""
    return key.startswith("full_")


def make_transform(patch_size: Any, norm_type: str) -> ImageTransform:
    """PIL RGB image -> normalised float tensor [3, H, W], as the reference code computes it."""
    transform_key(patch_size, norm_type)  # validates both values
    steps: list[Callable] = []
    if patch_size == CLIP224:
        steps += [
            T.Resize(CLIP_INPUT_SIZE, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop((CLIP_INPUT_SIZE, CLIP_INPUT_SIZE)),
        ]
    elif patch_size is not None:
        steps.append(T.CenterCrop(patch_size))
    mean, std = NORMALIZATION[norm_type]
    steps += [T.ToTensor(), T.Normalize(mean=mean, std=std)]
    return T.Compose(steps)


def _check_norm_type(norm_type: str) -> None:
    if norm_type not in NORMALIZATION:
        valid = ", ".join(NORMALIZATION)
        raise ValueError(f"unknown norm_type {norm_type!r}; valid choices: {valid}")
