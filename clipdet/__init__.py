"""clipdet: batch detection of AI-generated images with frozen CLIP features and linear heads."""

import importlib

__version__ = "0.1.0"

# Public API, imported on first use (keeps `import networks` and `import clipdet` independent
# of which comes first).
_API = {
    "BackboneCache": "factory",
    "LoadedModel": "factory",
    "create_detector": "factory",
    "apply_fusion": "fusion",
    "register_backbone": "registry",
    "iter_scores": "scoring",
    "load_models": "scoring",
    "score_images": "scoring",
    "train_detector": "training",
    "train_attributor": "training",
    "evaluate_attribution": "attribution_metrics",
    "split_open_set": "splits",
}
__all__ = list(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'clipdet' has no attribute {name!r}")
