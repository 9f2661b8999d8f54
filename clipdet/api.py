"""The Python API in one import: ``from clipdet.api import score_images``.

Each name is imported from its module when first used (PEP 562), so that scoring loads only
what scoring needs: training, metrics and scikit-learn load with the functions that use them.
"""

import importlib

_HOMES = {
    "BackboneCache": "clipdet.models.factory",
    "Calibration": "clipdet.evaluation.calibration",
    "FrameSampling": "clipdet.pipeline.video",
    "LoadedModel": "clipdet.models.factory",
    "ScoreJob": "clipdet.scoring_job",
    "ScoreRequest": "clipdet.scoring_job",
    "apply_fusion": "clipdet.pipeline.fusion",
    "calibrate": "clipdet.evaluation.calibration_run",
    "create_detector": "clipdet.models.factory",
    "evaluate_attribution": "clipdet.evaluation.attribution_metrics",
    "iter_scores": "clipdet.pipeline.scoring",
    "load_models": "clipdet.pipeline.scoring",
    "open_video": "clipdet.pipeline.video",
    "parse_backbone": "clipdet.models.registry",
    "register_backbone": "clipdet.models.registry",
    "register_extension": "clipdet.pipeline.extensions",
    "run_score_job": "clipdet.scoring_job",
    "score_images": "clipdet.scoring_job",
    "split_open_set": "clipdet.training.splits",
    "sweep": "clipdet.training.sweep",
    "train_attributor": "clipdet.training.attributor",
    "train_detector": "clipdet.training.detector",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'clipdet.api' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return __all__
