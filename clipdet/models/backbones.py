"""Frozen backbones: where their weights are (the library's hub cache and download, a given
file), reading them safely, building the feature extractor (networks.openclip_features,
networks.timm_features) and the library's own eval preprocessing for it.
"""

import logging
import os
from pathlib import Path

import open_clip
import torch
from torch import nn

from clipdet.models.preprocess import Preprocessing, library_preprocessing
from clipdet.models.registry import OPEN_CLIP, TIMM, BackboneSpec
from clipdet.models.weights import WeightsUnavailableError, load_state_dict
from networks import FrozenFeatures, OpenClipFeatures, TimmFeatures, openclip_features
from networks import build_visual_tower as _build_tower
from networks import timm_features as _timm_features

logger = logging.getLogger(__name__)

VISUAL_PREFIX = "visual."
# What open_clip looks for in a hub repository, safest first.
HUB_CHECKPOINT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def uses_quick_gelu(spec: BackboneSpec) -> bool:
    """QuickGELU follows the pretrained tag (OpenAI's weights were trained with it)."""
    tag_cfg = open_clip.get_pretrained_cfg(spec.model, spec.pretrained) if spec.pretrained else {}
    return bool(tag_cfg.get("quick_gelu", False))


def build_visual_tower(spec: BackboneSpec) -> nn.Module:
    """The image tower of backbone ``spec``, parameters on the meta device (not initialised)."""
    try:
        return _build_tower(spec.model, uses_quick_gelu(spec))
    except ValueError as e:
        raise ValueError(f"backbone {spec.name!r}: {e}") from e


def resolve_checkpoint(spec: BackboneSpec, cache_dir: str | None = None) -> Path:
    """Local path of the backbone's open_clip checkpoint, from the hub cache or downloaded."""
    if spec.pretrained:
        cfg = open_clip.get_pretrained_cfg(spec.model, spec.pretrained)
        if not cfg:
            tags = open_clip.list_pretrained_tags_by_model(spec.model)
            raise ValueError(
                f"open_clip has no pretrained tag {spec.pretrained!r} for {spec.model}; "
                f"valid choices: {', '.join(tags)}"
            )
    elif spec.hf_hub:
        cfg = {"hf_hub": spec.hf_hub}
    else:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(spec.model)) or "none"
        raise WeightsUnavailableError(
            f"backbone {spec.name!r} names no pretrained weights: add open_clip's pretrained "
            f"tag (valid choices: {tags}) or a weights file, or pass --backbone_weights PATH"
        )
    source = cfg.get("hf_hub") or cfg.get("url")
    cached = _find_in_hub_cache(cfg.get("hf_hub"), cache_dir)
    if cached:
        return cached
    try:
        path = open_clip.download_pretrained(cfg, cache_dir=cache_dir)
    except Exception as e:  # hub and network errors come in many types
        raise WeightsUnavailableError(
            f"could not obtain the weights of backbone {spec.name!r} (open_clip {spec.model}, "
            f"{spec.pretrained or spec.hf_hub}) from {source}: {_first_line(e)}. Without "
            "network, download open_clip_pytorch_model.bin (or the open_clip .safetensors) from "
            f"that Hugging Face repository elsewhere and pass --backbone_weights PATH (or "
            f"--backbone open_clip:{spec.model}:PATH), or place it in the Hugging Face hub cache"
        ) from e
    if not path:
        raise WeightsUnavailableError(f"no download source for backbone {spec.name!r}")
    _licence_notice(spec)
    return Path(path)


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _licence_notice(spec: BackboneSpec) -> None:
    """Said once, when the weights are downloaded (as for a detector's)."""
    if spec.licence:
        logger.warning("backbone %s is not under a permissive licence: %s", spec.name, spec.licence)


def _find_in_hub_cache(hf_hub: str | None, cache_dir: str | None) -> Path | None:
    """A checkpoint already in the Hugging Face cache, found without touching the network (the
    hub client would otherwise spend ~20 s retrying when offline)."""
    if not hf_hub:
        return None
    from huggingface_hub import try_to_load_from_cache

    # open_clip's convention: "org/repo/" means the default file names, "org/repo/file" one file.
    repo_id, filename = os.path.split(hf_hub)
    filenames = [filename] if filename else list(HUB_CHECKPOINT_NAMES)
    for name in filenames:
        found = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
        if isinstance(found, str):
            logger.info("found %s/%s in the Hugging Face cache", repo_id, name)
            return Path(found)
    return None


def load_visual_state_dict(checkpoint: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The image-tower entries of an open_clip checkpoint (a full CLIP or a visual-only one)."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise WeightsUnavailableError(f"backbone checkpoint not found: {checkpoint}")
    if checkpoint.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(checkpoint, framework="pt") as f:
            keys = [k for k in f.keys() if k.startswith(VISUAL_PREFIX)]
            state = {k.removeprefix(VISUAL_PREFIX): f.get_tensor(k) for k in keys}
    else:
        full = load_state_dict(checkpoint, mmap=True)
        state = {
            k.removeprefix(VISUAL_PREFIX): v for k, v in full.items() if k.startswith(VISUAL_PREFIX)
        }
        if not state:  # a checkpoint of the image tower alone
            state = full
    if not state:
        raise ValueError(f"{checkpoint} holds no image-tower weights")
    return state


def create_openclip_features(
    spec: BackboneSpec,
    checkpoint: str | os.PathLike | None = None,
    cache_dir: str | None = None,
) -> OpenClipFeatures:
    """Build the feature extractor of open_clip backbone ``spec`` with its pretrained weights
    (``checkpoint``, else the spec's file, else the tag's from the hub), on CPU."""
    path = checkpoint or spec.file
    path = Path(path) if path else resolve_checkpoint(spec, cache_dir=cache_dir)
    logger.info("loading %s image tower from %s", spec.model, path)
    state = load_visual_state_dict(path)
    try:
        return openclip_features(spec.model, state, uses_quick_gelu(spec))
    except ValueError as e:  # say which file
        detail = e.__cause__ or e
        raise ValueError(f"{path} does not match the {spec.model} image tower: {detail}") from e


def create_timm_features(
    spec: BackboneSpec, checkpoint: str | os.PathLike | None = None
) -> TimmFeatures:
    """Build timm backbone ``spec``: from a weights file (``checkpoint``, else the spec's file:
    the model's state dict, read safely) or with the pretrained tag's weights, downloaded by
    timm's own hub code (Hugging Face cache first)."""
    name = f"{spec.model}.{spec.pretrained}" if spec.pretrained else spec.model
    path = checkpoint or spec.file
    if path:
        path = Path(path)
        if not path.is_file():
            raise WeightsUnavailableError(f"backbone {spec.name!r}: weights file not found: {path}")
        logger.info("loading timm %s from %s", name, path)
        try:
            return _timm_features(name, load_state_dict(path, mmap=True))
        except ValueError as e:
            raise ValueError(f"backbone {spec.name!r} ({path}): {e}") from e
    import timm

    if not timm.is_model(spec.model):
        raise ValueError(f"backbone {spec.name!r}: timm has no model {spec.model!r}")
    if spec.pretrained and name not in timm.list_pretrained(f"{spec.model}.*"):
        tags = [t.split(".", 1)[1] for t in timm.list_pretrained(f"{spec.model}.*")]
        raise ValueError(
            f"backbone {spec.name!r}: timm has no pretrained tag {spec.pretrained!r} for "
            f"{spec.model}; valid choices: {', '.join(tags) or 'none'}"
        )
    cached = _timm_in_hub_cache(name)
    try:
        model = timm.create_model(name, pretrained=True)
    except Exception as e:  # hub and network errors come in many types
        repo = _timm_hub_repo(name) or "its Hugging Face repository"
        raise WeightsUnavailableError(
            f"could not obtain the weights of backbone {spec.name!r} (timm {name}) from {repo}: "
            f"{_first_line(e)}. Without network, download model.safetensors from {repo} "
            f"elsewhere and pass --backbone timm:{name}:PATH (or --backbone_weights PATH), or "
            "place it in the Hugging Face hub cache"
        ) from e
    if not cached:
        _licence_notice(spec)
    return TimmFeatures(model.eval())


def _timm_hub_repo(name: str) -> str | None:
    import timm

    try:
        return timm.models.get_pretrained_cfg(name).hf_hub_id
    except Exception:  # noqa: BLE001 -- an unknown tag: timm's own call words the error
        return None


def _timm_in_hub_cache(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    repo = _timm_hub_repo(name)
    if not repo:
        return False
    names = ("model.safetensors", "pytorch_model.bin")
    return any(isinstance(try_to_load_from_cache(repo, n), str) for n in names)


def create_frozen_features(
    spec: BackboneSpec, checkpoint: str | os.PathLike | None = None
) -> FrozenFeatures:
    """The frozen feature extractor of any backbone, by its library."""
    if spec.library == OPEN_CLIP:
        return create_openclip_features(spec, checkpoint)
    if spec.library == TIMM:
        return create_timm_features(spec, checkpoint)
    raise ValueError(f"backbone {spec.name!r}: unknown library {spec.library!r}")


def backbone_preprocessing(spec: BackboneSpec, module: FrozenFeatures) -> Preprocessing:
    """The library's own eval transform for the backbone, as ``create_model_and_transforms``
    (open_clip: the tag's preprocessing merged over the defaults, at the tower's input size)
    or ``create_transform(**resolve_model_data_config(model))`` (timm) makes it."""
    if isinstance(module, TimmFeatures):
        from timm.data import create_transform, resolve_model_data_config

        config = resolve_model_data_config(module.model)
        return library_preprocessing(TIMM, config, create_transform(**config))
    from dataclasses import asdict

    from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

    config = asdict(PreprocessCfg())
    if spec.pretrained:
        config = merge_preprocess_dict(
            config, open_clip.get_pretrained_cfg(spec.model, spec.pretrained)
        )
    config["size"] = module.visual.image_size
    transform = image_transform_v2(PreprocessCfg(**config), is_train=False)
    return library_preprocessing(OPEN_CLIP, config, transform)
