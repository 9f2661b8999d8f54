"""Literals shared across clipdet: column names, labels, defaults and normalisation statistics.
Imports nothing heavy: the command lines read it before parsing their arguments."""

import os

# open_clip's statistics (open_clip.constants; a test checks they agree), written out so that
# importing this module does not import open_clip and torch.
OPENAI_DATASET_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_DATASET_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Columns of the input and output CSV files.
FILENAME_COLUMN = "filename"
TYPE_COLUMN = "typ"
FUSION_COLUMN = "fusion"
ERROR_COLUMN = "error"
# --provenance: evidence tokens found in the file, and the generator they name
PROVENANCE_COLUMN = "provenance"
PROVENANCE_GENERATOR_COLUMN = "provenance_generator"
PROVENANCE_COLUMNS = (PROVENANCE_COLUMN, PROVENANCE_GENERATOR_COLUMN)
# --calibration: what the verdict rules read of each image (its size, its JPEG quality as its
# quantisation tables say; empty for other formats), and why a verdict was given
WIDTH_COLUMN = "width"
HEIGHT_COLUMN = "height"
JPEG_QUALITY_COLUMN = "jpeg_quality"
IMAGE_FACT_COLUMNS = (WIDTH_COLUMN, HEIGHT_COLUMN, JPEG_QUALITY_COLUMN)
GROUP_COLUMN = "group"  # the copies of one picture share a group
GROUP_SIZE_COLUMN = "group_size"
GROUP_AUTO = "auto"  # --group auto: the copies found among the images
VERDICT_COLUMN = "verdict"
VERDICT_REASON_COLUMN = "verdict_reason"
QUALITY_LLR_PREFIX = "qllr_"  # qllr_<model>: its LLR calibrated for the image's quality
VIEW_PREFIX = "llr@"  # llr@<view>: the decision LLR of an in-memory view (--views)
CONCEPTS_PREFIX = "concepts_"  # concepts_<model>: a concept model's three strongest concepts
DETECTOR_VERDICT_PREFIX = "verdict_"  # verdict_<model>: each detector's own calibrated verdict
# Videos: how many frames were scored, the duration (s), the temporal statistic of the frame
# features, the largest frame score; in --frames_out, each frame's index and time (s)
FRAMES_COLUMN = "frames"
DURATION_COLUMN = "duration_s"
TEMPORAL_COLUMN = "temporal"
FRAME_MAX_COLUMN = "frame_max"
VIDEO_COLUMNS = (FRAMES_COLUMN, DURATION_COLUMN, TEMPORAL_COLUMN, FRAME_MAX_COLUMN)
FRAME_COLUMN = "frame"
TIME_COLUMN = "time_s"
# Streamed Ray runs (an output folder): the input shard a row comes from, and its row there
SOURCE_COLUMN = "source"
SOURCE_ROW_COLUMN = "source_row"

# Labels of the `typ` column and the tasks a model config may declare.
REAL = "real"
SYNTHETIC = "synthetic"
INCONCLUSIVE = "inconclusive"
LABEL_COLUMN = "label"
DETECTION_TASK = "detection"
ATTRIBUTION_TASK = "attribution"

DEFAULT_ARCH = "opencliplinearnext_clipL14commonpool"  # what train.py trains on
DEFAULT_MODELS = ("clipdet_latent10k_plus", "Corvi2023")
DEFAULT_FUSION = "soft_or_prob"
# The fusions of pipeline/fusion.py, by name (a test checks they agree), and "no fusion".
FUSION_NAMES = ("mean_logit", "max_logit", "median_logit", "lse_logit", "mean_prob", "soft_or_prob")
NO_FUSION = "none"
CONFIG_FILENAME = "config.yaml"

# Names the command lines offer before they import the modules that implement them (tests
# check that they agree with evaluation.metrics.METRICS, evaluation.reports.FORMATS,
# models.attribution.UNKNOWN_SCORES and datasets.DATASETS).
METRIC_NAMES = (
    "auc", "acc", "ap", "eer", "pd_fpr1", "pd_fpr5", "pd_fpr10", "acc_real", "acc_fake",
    "logloss", "cllr", "ece",
)  # fmt: skip
TABLE_FORMATS = ("csv", "md", "json")
UNKNOWN_SCORE_NAMES = ("energy", "msp")
DEFAULT_UNKNOWN_SCORE = "energy"
DEFAULT_ACCEPT_RATE = 0.95
DATASET_NAMES = ("synthbuster", "grip_test", "grip_train", "synthwildx")

# Normalisation statistics by the `norm_type` key of a model config.
NORMALIZATION = {
    "clip": (OPENAI_DATASET_MEAN, OPENAI_DATASET_STD),
    "resnet": (IMAGENET_MEAN, IMAGENET_STD),
    "xception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}

# `patch_size: Clip224` in a config: bicubic resize of the short side, then a centre crop.
CLIP224 = "Clip224"
CLIP_NORM = "clip"  # `norm_type` of CLIP-based models
CLIP_INPUT_SIZE = 224


def default_weights_dir() -> str:
    """``$CLIPDET_WEIGHTS_DIR`` (the Docker image points it at its cache volume), else
    ``./weights``."""
    return os.environ.get("CLIPDET_WEIGHTS_DIR", "./weights")
