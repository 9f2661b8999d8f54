"""The *infer* stage: a batch of prepared items -> one record per item (each detector's LLR,
each attribution model's logits, errors), on one device: the backbone passes
(``backbone_pass``), then every head; a video's frames are batched with the images and folded
into its row."""

import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from clipdet.pipeline.backbone_pass import BatchFeatures, FeatureGroup, FeatureInfer
from clipdet.pipeline.extensions import Frames, RowExtension
from clipdet.pipeline.feature_cache import FeatureCache
from clipdet.pipeline.prepare import PreparedItem
from clipdet.pipeline.record import ImageResult, split_models


def feature_groups(models) -> tuple[list[FeatureGroup], list[str]]:
    """Distinct (backbone, preprocessing) pairs and, for each model, the key of its group."""
    groups: dict[str, FeatureGroup] = {}
    keys = []
    for m in models:
        d = m.detector
        if d.frozen_backbone:
            group = FeatureGroup.frozen(
                d.backbone, d.backbone_key, m.preprocess, d.layer, d.normalize_features
            )
        else:
            group = FeatureGroup(d.backbone, m.preprocess, d.fc.in_features, source=m.name)
        groups.setdefault(group.key, group)
        keys.append(group.key)
    return list(groups.values()), keys


class ScoreInfer:
    """Backbone passes, then every head: prepared items -> one ImageResult per item, in order.
    Detection models give one LLR each, attribution models their class logits; a video's
    frames fold into its row, and into each of the run's row ``extensions``."""

    def __init__(
        self,
        models,
        device,
        cache: FeatureCache | None = None,
        maps: bool = False,
        extensions: Sequence[RowExtension] = (),
        profile=None,
        max_batch: int | None = None,
    ):
        self.groups, keys = feature_groups(models)
        self.group_of = {m.name: key for m, key in zip(models, keys, strict=True)}
        self.detectors, self.attributors = split_models(models)
        map_heads = {}
        for m in self.detectors if maps else ():
            if hasattr(m.detector.backbone, "forward_with_maps"):
                map_heads.setdefault(self.group_of[m.name], []).append((m.name, m.detector.fc))
        self.features = FeatureInfer(self.groups, device, cache, map_heads, profile, max_batch)
        self.extensions = tuple(extensions)
        # the frames' embeddings an extension folds: the first frozen backbone's features
        self.embedding_key = next((g.key for g in self.groups if g.identity), None)

    @torch.inference_mode()
    def __call__(self, batch: Sequence[PreparedItem]) -> list[ImageResult]:
        profile = self.features.profile
        if profile is not None:
            profile.images += len(batch)
            for item in batch:
                for stage, seconds in item.timings.items():
                    profile.add(stage, seconds)
        videos = [item for item in batch if item.video is not None]
        viewed = [item for item in batch if item.views]
        found = self.features(expand_items(batch) if videos or viewed else batch)
        with self.features.timed("heads"):
            results = self._heads(found)
        extras = {item.index: item.extras for item in batch}  # (a video's rows are its frames')
        for result in results:  # an image's row extensions, as its prepare stage left them
            result.extras = extras.get(result.index, result.extras)
        if videos or viewed:
            by_index = {r.index: r for r in results}
            embeddings = self._embeddings(found) if videos else {}
            for item in videos:
                by_index[item.index] = self._video_result(item, by_index, embeddings)
            for item in viewed:
                by_index[item.index] = self._viewed_result(item, by_index)
            results = [by_index[item.index] for item in batch]
        self._fold_embeddings(results, found, {item.index for item in viewed})
        return results

    def _viewed_result(self, item: PreparedItem, results: dict) -> ImageResult:
        """An image scored with its views: its own row (``(row, 0)``), and each view's LLRs
        ([views, detectors]) folded into the extensions."""
        result = results.pop((item.index, 0))
        views = [results.pop((item.index, k)) for k in range(1, len(item.views) + 1)]
        scores = np.stack([view.scores for view in views])
        result.index, result.extras = item.index, dict(item.extras)
        for ext in self.extensions:
            value = ext.fold_views(result.extras.get(ext.name), scores)
            if value is not None:
                result.extras[ext.name] = value
        return result

    def _fold_embeddings(self, results: list[ImageResult], found: BatchFeatures, viewed) -> None:
        """Hand each extension that reads a model's features each row's (a video's: the mean
        over its frames; an image with views: its own, not its views'); each group's
        features are gathered once, whatever the number of extensions reading them."""
        by_group: dict[str, dict] = {}
        for ext in self.extensions:
            if not ext.reads_embedding:
                continue
            key = (self.group_of.get(ext.embedding_model) if ext.embedding_model
                   else self.embedding_key or self.groups[0].key)  # fmt: skip
            if key not in found.features:
                continue
            if key not in by_group:
                by_group[key] = _row_vectors(*found.features[key], viewed)
            vectors = by_group[key]
            for result in results:
                value = ext.fold_embedding(result.extras.get(ext.name), vectors.get(result.index))
                if value is not None:
                    result.extras = {**result.extras, ext.name: value}

    def _embeddings(self, found: BatchFeatures) -> dict:
        """Row (a video frame's ``(row, k)``) -> its features in the embedding group: the
        first frozen backbone's (of the first model that has one)."""
        if self.embedding_key not in found.features:
            return {}
        rows, values = found.features[self.embedding_key]
        return dict(zip(rows, values.float().cpu().numpy(), strict=True))

    def _video_result(self, item: PreparedItem, results: dict, embeddings: dict) -> ImageResult:
        """A video's row: each model's mean over its frames (NaN-aware: a frame a model failed
        on is left out); the extensions fold the frames (their embeddings only when every
        frame has them)."""
        keys = [(item.index, k) for k in range(len(item.video.times))]
        frames = [results.pop(key) for key in keys]
        frame_scores = np.stack([r.scores for r in frames])
        with warnings.catch_warnings():  # a model that failed on every frame: NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            scores = np.nanmean(frame_scores, axis=0)
            logits = {
                name: np.nanmean(np.stack([r.logits[name] for r in frames]), axis=0)
                for name in frames[0].logits
            }
        errors = [r.error for r in frames if r.error]
        error = errors[0] if len(errors) == len(frames) else ""
        vectors = [embeddings.get(key) for key in keys]
        complete = all(v is not None for v in vectors)
        frames = Frames(np.asarray(item.video.times), frame_scores, item.video.duration,
                        np.stack(vectors) if complete else None)  # fmt: skip
        extras = {}
        for ext in self.extensions:
            value = ext.fold_frames(item.extras.get(ext.name), frames)
            if value is not None:
                extras[ext.name] = value
        return ImageResult(item.index, scores, error, logits, extras=extras)

    def _heads(self, found: BatchFeatures) -> list[ImageResult]:
        results = {
            i: ImageResult(
                i,
                np.full(len(self.detectors), np.nan),
                found.errors.get(i, ""),
                {m.name: np.full(m.detector.num_outputs, np.nan) for m in self.attributors},
            )
            for i in found.indices
        }
        for column, model in enumerate(self.detectors):
            for index, llr in apply_head(model, found.features.get(self.group_of[model.name])):
                results[index].scores[column] = llr
        for index, maps in found.maps.items():
            results[index].maps = maps
        for model in self.attributors:
            for index, logits in apply_head(model, found.features.get(self.group_of[model.name])):
                results[index].logits[model.name] = logits
        return list(results.values())


def expand_items(batch: Sequence[PreparedItem]) -> list[PreparedItem]:
    """The batch with each video replaced by one item per frame (index ``(row, k)``), and
    each image with views by itself (``(row, 0)``) and one item per view (``(row, k)``, k >= 1),
    so that frames and views are batched with images."""
    expanded = []
    for item in batch:
        if item.video is not None:
            for k in range(len(item.video.times)):
                tensors = {key: stack[k] for key, stack in item.tensors.items()}
                expanded.append(PreparedItem((item.index, k), tensors, {}, None, ""))
        elif item.views:
            for k, tensors in enumerate([item.tensors, *item.views]):
                expanded.append(PreparedItem((item.index, k), tensors, {}, None, item.error))
        else:
            expanded.append(item)
    return expanded


def _row_vectors(rows, values, viewed) -> dict:
    """Row -> its feature vector: a video's, the mean over its frames; an image with views,
    its own (``(row, 0)``)."""
    gathered: dict = {}
    for row, vector in zip(rows, values.float().cpu().numpy(), strict=True):
        if isinstance(row, tuple) and row[0] in viewed and row[1] != 0:
            continue
        gathered.setdefault(row[0] if isinstance(row, tuple) else row, []).append(vector)
    return {row: np.mean(vectors, axis=0) for row, vectors in gathered.items()}


def apply_head(model, group_features) -> Iterator[tuple[int, np.ndarray]]:
    if group_features is None:
        return
    rows, features = group_features
    outputs = model.detector.forward_head(features).float().cpu().numpy().astype(np.float64)
    yield from zip(rows, outputs, strict=True)
