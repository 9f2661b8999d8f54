"""CLIP backbones: where their open_clip checkpoint is (hub cache, download, a given file),
reading its image-tower weights, and building the feature extractor (networks.openclip_features).
"""

import logging
import os
from pathlib import Path

import open_clip
import torch
from torch import nn

from clipdet.models.registry import BackboneSpec
from clipdet.models.weights import WeightsUnavailableError, load_state_dict
from networks.openclip_features import OpenClipFeatures, openclip_features
from networks.openclip_features import build_visual_tower as _build_tower

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
        raise WeightsUnavailableError(
            f"backbone {spec.name!r} declares no pretrained weights; pass --backbone_weights PATH"
        )
    source = cfg.get("hf_hub") or cfg.get("url")
    cached = _find_in_hub_cache(cfg.get("hf_hub"), cache_dir)
    if cached:
        return cached
    try:
        path = open_clip.download_pretrained(cfg, cache_dir=cache_dir)
    except Exception as e:  # hub and network errors come in many types
        raise WeightsUnavailableError(
            f"could not obtain the {spec.model} ({spec.pretrained or spec.hf_hub}) CLIP weights "
            f"from {source}: {e}. Without network, download open_clip_pytorch_model.bin (or the "
            "open_clip .safetensors) from that Hugging Face repository and pass "
            "--backbone_weights PATH, or place it in the Hugging Face hub cache"
        ) from e
    if not path:
        raise WeightsUnavailableError(f"no download source for backbone {spec.name!r}")
    return Path(path)


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
    next_to_last: bool,
    checkpoint: str | os.PathLike | None = None,
    cache_dir: str | None = None,
) -> OpenClipFeatures:
    """Build the feature extractor of ``spec`` with its pretrained (or given) weights, on CPU."""
    path = Path(checkpoint) if checkpoint else resolve_checkpoint(spec, cache_dir=cache_dir)
    logger.info("loading %s image tower from %s", spec.model, path)
    state = load_visual_state_dict(path)
    try:
        return openclip_features(spec.model, state, next_to_last, uses_quick_gelu(spec))
    except ValueError as e:  # say which file
        detail = e.__cause__ or e
        raise ValueError(f"{path} does not match the {spec.model} image tower: {detail}") from e
