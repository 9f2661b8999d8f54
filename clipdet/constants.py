"""Literals shared across clipdet: column names, defaults and normalisation statistics."""

from open_clip.constants import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    OPENAI_DATASET_MEAN,
    OPENAI_DATASET_STD,
)

# Columns of the input and output CSV files.
FILENAME_COLUMN = "filename"
TYPE_COLUMN = "typ"
FUSION_COLUMN = "fusion"
ERROR_COLUMN = "error"

DEFAULT_MODELS = ("clipdet_latent10k_plus", "Corvi2023")
DEFAULT_FUSION = "soft_or_prob"
CONFIG_FILENAME = "config.yaml"

# Normalisation statistics by the `norm_type` key of a model config.
NORMALIZATION = {
    "clip": (OPENAI_DATASET_MEAN, OPENAI_DATASET_STD),
    "resnet": (IMAGENET_MEAN, IMAGENET_STD),
    "xception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}

# `patch_size: Clip224` in a config: bicubic resize of the short side, then a centre crop.
CLIP224 = "Clip224"
CLIP_INPUT_SIZE = 224
