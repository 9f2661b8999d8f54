"""Feature extraction over image files: each image decoded once (in DataLoader workers), each
distinct preprocessing applied once, each backbone run once per batch, with an optional
content-keyed feature cache for frozen backbones."""

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from clipdet.models.preprocess import ImageTransform, is_full_resolution
from clipdet.models.weights import sha256_of
from clipdet.pipeline.feature_cache import FeatureCache
from clipdet.pipeline.images import load_rgb

logger = logging.getLogger(__name__)


@dataclass
class FeatureGroup:
    """One feature layer of one backbone under one preprocessing. ``identity`` (set for frozen
    backbones) makes its features cacheable: it names the model, its weights, the feature layer
    and preprocessing. ``layer`` None is the backbone's output; an int K is the CLS token of
    transformer block K. Groups on one backbone and preprocessing share one forward pass."""

    backbone: nn.Module
    transform_key: str
    num_features: int
    identity: str | None = None
    layer: int | None = None
    namespace: str | None = field(default=None, init=False)

    @classmethod
    def frozen(
        cls, backbone: nn.Module, backbone_key: str, transform_key: str, layer: int | None = None
    ) -> "FeatureGroup":
        """A pretrained, shared backbone: its features are cacheable under its identity."""
        identity = f"{backbone_key}|{transform_key}"
        return cls(backbone, transform_key, backbone.layer_width(layer), identity, layer)

    @property
    def pass_key(self) -> str:
        """Groups with the same pass key are computed by one forward pass."""
        return f"{id(self.backbone)}|{self.transform_key}"

    @property
    def key(self) -> str:
        return self.pass_key if self.layer is None else f"{self.pass_key}|block{self.layer}"


@dataclass
class _Item:
    index: int
    tensors: dict[str, torch.Tensor]
    cached: dict[str, np.ndarray]  # group key -> features found in the cache
    digest: str | None
    error: str

    def pin_memory(self) -> "_Item":
        """Called by the DataLoader (pin_memory=True on CUDA) for fast non-blocking copies."""
        self.tensors = {key: t.pin_memory() for key, t in self.tensors.items()}
        return self


class _ImageDataset(Dataset):
    def __init__(self, paths, transforms, groups, cache: FeatureCache | None, perturbation=None):
        self.paths = list(paths)
        self.transforms = transforms
        self.groups = groups
        self.cache = cache if any(g.namespace for g in groups) else None
        self.perturbation = perturbation

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> _Item:
        item = _Item(index, {}, {}, None, "")
        try:
            if self.cache is not None:
                item.digest = sha256_of(self.paths[index])  # content key
                for g in self.groups:
                    if g.namespace:
                        found = self.cache.get(g.namespace, item.digest, g.num_features)
                        if found is not None:
                            item.cached[g.key] = found
            needed = {g.transform_key for g in self.groups if g.key not in item.cached}
            if needed:
                image = load_rgb(self.paths[index])
                if self.perturbation is not None:
                    image = self.perturbation(image, index).image
                item.tensors = {key: self.transforms[key](image) for key in needed}
        except Exception as e:  # one bad file must not stop the batch
            item.error = describe_error(e)
        return item


def backbone_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def describe_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".replace("\n", " ")


@dataclass
class BatchFeatures:
    """Features of one batch: per group, the rows it covers and a [rows, D] tensor."""

    indices: list[int]  # every image of the batch, in order
    errors: dict[int, str]  # index -> message (decode errors and model failures)
    features: dict[str, tuple[list[int], torch.Tensor]]


def iter_batch_features(
    groups: Sequence[FeatureGroup],
    transforms: dict[str, ImageTransform],
    paths: Sequence[str],
    device: str | torch.device = "cpu",
    batch_size: int = 4,
    num_workers: int = 0,
    cache: FeatureCache | None = None,
    progress: bool = False,
    perturbation: Callable | None = None,
) -> Iterator[BatchFeatures]:
    """Yield the features of every group, batch by batch, in input order. ``perturbation``
    (see perturb.py) impairs each decoded image before preprocessing; the feature cache, keyed
    by file content, is then not used."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if perturbation is not None and cache is not None:
        logger.warning("feature cache not used: images are perturbed in memory")
        cache = None
    device = torch.device(device)
    for g in groups:  # the weights' dtype is part of the features' identity
        identity = f"{g.identity}|{backbone_dtype(g.backbone)}"
        g.namespace = cache.register(identity, g.num_features) if cache and g.identity else None
    loader = DataLoader(
        _ImageDataset(paths, transforms, list(groups), cache, perturbation),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=list,
        pin_memory=device.type == "cuda",
    )
    bar = tqdm(total=len(paths), unit="img", disable=not progress, dynamic_ncols=True)
    failures = 0
    with torch.inference_mode():
        for batch in loader:
            result = _batch_features(batch, groups, device, cache)
            failures += len(result.errors)
            bar.update(len(batch))
            bar.set_postfix(failed=failures, refresh=False)
            yield result
    bar.close()


def _batch_features(batch: list[_Item], groups, device, cache) -> BatchFeatures:
    errors = {item.index: item.error for item in batch if item.error}
    ok = [item for item in batch if not item.error]
    rows: dict[str, dict[int, torch.Tensor]] = {g.key: {} for g in groups}
    for g in groups:
        for item in ok:
            if g.key in item.cached:
                rows[g.key][item.index] = torch.from_numpy(item.cached[g.key]).to(device)
    passes: dict[str, list[FeatureGroup]] = {}
    for g in groups:
        passes.setdefault(g.pass_key, []).append(g)
    for members in passes.values():
        todo = [item for item in ok if any(g.key not in item.cached for g in members)]
        for chunk, x in _stack(todo, members[0].transform_key):
            try:
                outputs = _forward(members, x.to(device, non_blocking=True))
            except RuntimeError as e:  # e.g. out of memory on one huge image
                logger.debug("backbone failure", exc_info=True)
                for item in chunk:
                    errors[item.index] = _join(errors.get(item.index, ""), describe_error(e))
                continue
            for g in members:
                for item, vector in zip(chunk, outputs[g.key], strict=True):
                    rows[g.key][item.index] = vector
                    if g.namespace and item.digest and g.key not in item.cached:
                        cache.put(g.namespace, item.digest, vector.cpu().numpy())
    features = {}
    for g in groups:
        order = [item.index for item in ok if item.index in rows[g.key]]
        if order:
            features[g.key] = (order, torch.stack([rows[g.key][i] for i in order]))
    return BatchFeatures([item.index for item in batch], errors, features)


def _forward(members: list[FeatureGroup], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every member's features from one pass of their shared backbone (float32)."""
    backbone = members[0].backbone
    x = x.to(dtype=backbone_dtype(backbone))
    blocks = [g.layer for g in members if g.layer is not None]
    if not blocks:
        out = backbone(x).float()
        return {g.key: out for g in members}
    final = any(g.layer is None for g in members)
    out, captured = backbone.forward_layers(x, blocks, final=final)
    return {g.key: (out if g.layer is None else captured[g.layer]).float() for g in members}


def _stack(items: list[_Item], key: str) -> Iterator[tuple[list[_Item], torch.Tensor]]:
    """All fixed-size tensors at once; full-resolution ones one image at a time."""
    if not items:
        return
    if is_full_resolution(key):
        for item in items:
            yield [item], item.tensors[key].unsqueeze(0)
    else:
        yield items, torch.stack([item.tensors[key] for item in items])


def _join(first: str, second: str) -> str:
    if not first or second in first:
        return first or second
    return f"{first}; {second}"


def extract_features(
    group: FeatureGroup,
    transform: ImageTransform,
    paths: Sequence[str],
    device: str | torch.device = "cpu",
    batch_size: int = 4,
    num_workers: int = 0,
    cache: FeatureCache | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, list[str]]:
    """[len(paths), D] float32 features (NaN rows where an image failed) and the error per image."""
    features = np.full((len(paths), group.num_features), np.nan, dtype=np.float32)
    errors = [""] * len(paths)
    for batch in iter_batch_features(
        [group],
        {group.transform_key: transform},
        paths,
        device,
        batch_size,
        num_workers,
        cache,
        progress,
    ):
        for index, message in batch.errors.items():
            errors[index] = message
        if group.key in batch.features:
            rows, values = batch.features[group.key]
            features[rows] = values.cpu().numpy()
    return features, errors
