"""The Python API in one import: ``from clipdet.api import score_images``."""

from clipdet.evaluation.attribution_metrics import evaluate_attribution
from clipdet.evaluation.calibration import Calibration
from clipdet.evaluation.calibration_run import calibrate
from clipdet.models.factory import BackboneCache, LoadedModel, create_detector
from clipdet.models.registry import parse_backbone, register_backbone
from clipdet.pipeline.fusion import apply_fusion
from clipdet.pipeline.scoring import iter_scores, load_models
from clipdet.pipeline.video import FrameSampling, open_video
from clipdet.scoring_job import ScoreJob, ScoreRequest, run_score_job, score_images
from clipdet.training.attributor import train_attributor
from clipdet.training.detector import train_detector
from clipdet.training.splits import split_open_set
from clipdet.training.sweep import sweep

__all__ = [
    "BackboneCache",
    "Calibration",
    "FrameSampling",
    "LoadedModel",
    "ScoreJob",
    "ScoreRequest",
    "apply_fusion",
    "calibrate",
    "create_detector",
    "evaluate_attribution",
    "iter_scores",
    "load_models",
    "open_video",
    "parse_backbone",
    "register_backbone",
    "run_score_job",
    "score_images",
    "split_open_set",
    "sweep",
    "train_attributor",
    "train_detector",
]
