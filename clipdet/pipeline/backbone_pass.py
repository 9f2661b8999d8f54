"""The backbone passes of the infer stage: prepared items -> the features of every feature
group (one backbone layer under one preprocessing), float32, on one device. Groups on one
backbone and preprocessing share one forward pass; items whose features came from the feature
cache skip it; full-resolution backbones can give each head's evidence map too."""

import logging
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clipdet.models.preprocess import PreprocessCfg
from clipdet.pipeline.feature_cache import FeatureCache
from clipdet.pipeline.images import describe_error
from clipdet.pipeline.prepare import CachedGroup, PreparedItem
from networks import FrozenFeatures

logger = logging.getLogger(__name__)


@dataclass
class FeatureGroup:
    """One feature layer of one backbone under one preprocessing. ``identity`` (set for frozen
    backbones) makes its features cacheable: it names the model, its weights, the feature layer
    and preprocessing. ``layer``: a frozen backbone's feature layer (``networks.frozen_features``:
    "embed", "next_to_last" or a block index); None for a trainable network, whose output is
    its features. Groups on one backbone and preprocessing share one forward pass, whatever
    their layers. ``source`` names the backbone module the same way in every process: a shared
    frozen module by its cache key (``BackboneCache``), a trainable one by its model's name."""

    backbone: nn.Module
    preprocess: PreprocessCfg
    num_features: int
    identity: str | None = None
    layer: str | int | None = None
    source: str | None = None
    normalize: bool = True  # a frozen backbone's features L2-normalised (False: raw, UnivFD)
    namespace: str | None = field(default=None, init=False)

    @classmethod
    def frozen(
        cls,
        backbone: nn.Module,
        backbone_key: str,
        preprocess: PreprocessCfg,
        layer: str | int,
        normalize: bool = True,
    ) -> "FeatureGroup":
        """A pretrained, shared backbone: its features are cacheable under its identity."""
        identity = f"{backbone_key}|{preprocess.key}" + ("" if normalize else "|raw")
        source = getattr(backbone, "cache_key", None)
        width = backbone.layer_width(layer)
        return cls(backbone, preprocess, width, identity, layer, source, normalize)

    @property
    def transform_key(self) -> str:
        return self.preprocess.key

    @property
    def pass_key(self) -> str:
        """Groups with the same pass key are computed by one forward pass. It names the
        backbone, not its address in memory, so that a prepare stage and an infer stage built
        in different processes (a cluster's) agree on it."""
        return f"{self.source or id(self.backbone)}|{self.transform_key}"

    @property
    def key(self) -> str:
        layer = self.layer
        key = self.pass_key if layer is None else f"{self.pass_key}|{_layer_name(layer)}"
        return key if self.normalize else f"{key}|raw"


def _layer_name(layer: str | int) -> str:
    return f"block{layer}" if isinstance(layer, int) else layer


def backbone_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def register_in_cache(groups: Sequence[FeatureGroup], cache: FeatureCache | None):
    """Give each cacheable group its cache namespace (the weights' dtype is part of the
    features' identity); returns what the prepare stage needs to look them up."""
    cached = []
    for g in groups:
        g.namespace = None
        if cache is not None and g.identity:
            identity = f"{g.identity}|{backbone_dtype(g.backbone)}"
            g.namespace = cache.register(identity, g.num_features)
            cached.append(CachedGroup(g.key, g.transform_key, g.namespace, g.num_features))
    return tuple(cached)


@dataclass
class BatchFeatures:
    """Features of one batch: per group, the rows it covers and a [rows, D] tensor."""

    indices: list[int]  # every image of the batch, in order
    errors: dict[int, str]  # index -> message (decode errors and model failures)
    features: dict[str, tuple[list[int], torch.Tensor]]
    maps: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)  # index -> model -> map


class FeatureInfer:
    """Backbone passes: prepared items -> the features of every group (float32). ``map_heads``
    (group key -> [(model name, linear head)]) asks the backbones that can (full-resolution
    ResNets) for each head's evidence map as well: its logit at every output location, whose
    mean is the image's logit."""

    def __init__(
        self,
        groups: Sequence[FeatureGroup],
        device,
        cache: FeatureCache | None = None,
        map_heads: dict | None = None,
        profile=None,
        max_batch: int | None = None,
    ):
        self.groups = list(groups)
        self.device = torch.device(device)
        self.cache = cache
        self.map_heads = map_heads or {}
        self.profile = profile  # a clipdet.pipeline.profile.Profile times the passes (--profile)
        self.max_batch = max_batch  # images per forward pass at most (a batch's video frames)

    def timed(self, stage: str):
        return self.profile.timed(stage) if self.profile is not None else nullcontext()

    @torch.inference_mode()
    def __call__(self, batch: Sequence[PreparedItem]) -> BatchFeatures:
        if any(item.encoded is not None for item in batch):  # --decode gpu
            from clipdet.pipeline.gpu_decode import decode_items

            with self.timed("device decode"):
                decode_items(batch, self.device)
        errors = {item.index: item.error for item in batch if item.error}
        ok = [item for item in batch if not item.error]
        rows: dict[str, dict[int, torch.Tensor]] = {g.key: {} for g in self.groups}
        for g in self.groups:
            for item in ok:
                if g.key in item.cached:
                    rows[g.key][item.index] = torch.from_numpy(item.cached[g.key]).to(self.device)
        passes: dict[str, list[FeatureGroup]] = {}
        for g in self.groups:
            passes.setdefault(g.pass_key, []).append(g)
        maps: dict[int, dict[str, np.ndarray]] = {}
        for members in passes.values():
            todo = [item for item in ok if any(g.key not in item.cached for g in members)]
            heads = self.map_heads.get(members[0].key)
            for chunk, x in _stack(todo, members[0].preprocess, self.max_batch):
                try:
                    with self.timed("host->device copy"):
                        x = x.to(self.device, non_blocking=True)
                    with self.timed("backbone"):
                        if heads:
                            outputs = _forward_with_maps(members[0], heads, x, chunk, maps)
                        else:
                            outputs = _forward(members, x)
                except RuntimeError as e:  # e.g. out of memory on one huge image
                    logger.debug("backbone failure", exc_info=True)
                    for item in chunk:
                        errors[item.index] = _join(errors.get(item.index, ""), describe_error(e))
                    continue
                for g in members:
                    for item, vector in zip(chunk, outputs[g.key], strict=True):
                        rows[g.key][item.index] = vector
                        if g.namespace and item.digest and g.key not in item.cached:
                            self.cache.put(g.namespace, item.digest, vector.cpu().numpy())
        features = {}
        for g in self.groups:
            order = [item.index for item in ok if item.index in rows[g.key]]
            if order:
                features[g.key] = (order, torch.stack([rows[g.key][i] for i in order]))
        return BatchFeatures([item.index for item in batch], errors, features, maps)


def _forward_with_maps(group, heads, x, chunk, maps) -> dict[str, torch.Tensor]:
    """A full-resolution pass that also keeps each head's logit map (bias added)."""
    backbone = group.backbone
    weights = torch.cat([head.weight for _, head in heads])
    pooled, head_maps = backbone.forward_with_maps(x.to(dtype=backbone_dtype(backbone)), weights)
    for item, per_image in zip(chunk, head_maps, strict=True):
        for (name, head), head_map in zip(heads, per_image, strict=True):
            logits = head_map.float() + head.bias.float()
            maps.setdefault(item.index, {})[name] = logits.cpu().numpy().astype(np.float32)
    return {group.key: pooled.float()}


def _forward(members: list[FeatureGroup], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every member's features from one pass of their shared backbone (float32): a frozen
    backbone gives all their layers at once, normalised or raw as each member wants."""
    backbone = members[0].backbone
    x = x.to(dtype=backbone_dtype(backbone))
    if not isinstance(backbone, FrozenFeatures):  # a trainable network: its output
        out = backbone(x).float()
        return {g.key: out for g in members}
    found = backbone(x, {g.layer for g in members})
    features = {}
    for g in members:
        raw = found[g.layer].float()
        features[g.key] = F.normalize(raw, dim=-1) if g.normalize else raw
    return features


def _stack(
    items: list[PreparedItem], preprocess: PreprocessCfg, limit: int | None = None
) -> Iterator[tuple[list[PreparedItem], torch.Tensor]]:
    """Fixed-size tensors together, at most ``limit`` at a time (a batch of videos has many
    frames); full-resolution ones one image at a time."""
    if not items:
        return
    key = preprocess.key
    if preprocess.full_resolution:
        for item in items:
            yield [item], item.tensors[key].unsqueeze(0)
        return
    by_shape: dict[tuple, list[PreparedItem]] = {}  # e.g. five grids, or one for a small image
    for item in items:
        by_shape.setdefault(tuple(item.tensors[key].shape), []).append(item)
    for same in by_shape.values():
        step = limit or len(same)
        for start in range(0, len(same), step):
            chunk = same[start : start + step]
            yield chunk, torch.stack([item.tensors[key] for item in chunk])


def _join(first: str, second: str) -> str:
    if not first or second in first:
        return first or second
    return f"{first}; {second}"
