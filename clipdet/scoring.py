"""Batch scoring: decode each image once (in DataLoader workers), apply each distinct
preprocessing once, run each backbone once per batch and every head on its features."""

import logging
import os
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .constants import DEFAULT_FUSION, DEFAULT_MODELS
from .factory import BackboneCache, LoadedModel, create_detector
from .images import load_rgb
from .preprocess import ImageTransform, is_full_resolution
from .tables import build_table

logger = logging.getLogger(__name__)


def default_device() -> str:
    return "cuda:0" if torch.cuda.is_available() else "cpu"


def default_batch_size(device: str | torch.device) -> int:
    """On CPU small batches let decoding overlap compute (batching gains little there); on a
    GPU large batches keep it busy."""
    return 32 if torch.device(device).type == "cuda" else 4


def default_num_workers() -> int:
    return min(4, os.cpu_count() or 1)


def load_models(
    names: Sequence[str],
    weights_dir: str | os.PathLike = "weights",
    backbone_weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> list[LoadedModel]:
    """Build every named model on ``device``; heads on one backbone share it."""
    if len(set(names)) != len(names):
        raise ValueError(f"a model is named twice in {', '.join(names)}")
    cache = BackboneCache(backbone_weights)
    models = [create_detector(name, weights_dir, cache) for name in names]
    for model in models:
        model.detector.to(device)
    return models


class _ImageDataset(Dataset):
    """Item i: (i, {transform key: tensor} or None, error message or "")."""

    def __init__(self, paths: Sequence[str], transforms: dict[str, ImageTransform]):
        self.paths = list(paths)
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            image = load_rgb(self.paths[index])
            return index, {key: t(image) for key, t in self.transforms.items()}, ""
        except Exception as e:  # one bad file must not stop the batch
            return index, None, _describe(e)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".replace("\n", " ")


@dataclass
class ImageResult:
    index: int
    scores: np.ndarray  # one LLR per model, NaN where that model failed
    error: str


def iter_scores(
    models: Sequence[LoadedModel],
    paths: Sequence[str],
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    num_workers: int = 0,
    progress: bool = False,
) -> Iterator[ImageResult]:
    """Score ``paths`` with every model, yielding results batch by batch in input order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    transforms = {m.transform_key: m.transform for m in models}
    # transform key -> backbone key -> [(model column, detector)]
    plan: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for column, m in enumerate(models):
        plan[m.transform_key][m.detector.backbone_key].append((column, m.detector))
    loader = DataLoader(
        _ImageDataset(paths, transforms),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=list,
        pin_memory=device.type == "cuda",
    )
    bar = tqdm(total=len(paths), unit="img", disable=not progress, dynamic_ncols=True)
    failures = 0
    with torch.inference_mode():
        for batch in loader:
            results = _score_batch(batch, plan, len(models), device)
            failures += sum(bool(r.error) for r in results)
            bar.update(len(results))
            bar.set_postfix(failed=failures, refresh=False)
            yield from results
    bar.close()


def _score_batch(batch, plan, n_models: int, device: torch.device) -> list[ImageResult]:
    results = {
        index: ImageResult(index, np.full(n_models, np.nan), error) for index, _, error in batch
    }
    decoded = [(index, tensors) for index, tensors, error in batch if not error]
    for key, backbones in plan.items():
        for indices, x in _stack(decoded, key):
            x = x.to(device, non_blocking=True)
            for members in backbones.values():
                try:
                    features = members[0][1].forward_features(x)
                    for column, detector in members:
                        llr = detector.forward_head(features).float().cpu().numpy()
                        for index, value in zip(indices, llr, strict=True):
                            results[index].scores[column] = value
                except RuntimeError as e:  # e.g. out of memory on one huge image
                    logger.debug("model failure on %s", indices, exc_info=True)
                    for index in indices:
                        _add_error(results[index], _describe(e))
    return [results[index] for index, _, _ in batch]


def _stack(decoded, key: str) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Batches of tensors for one transform: all at once for fixed-size inputs, one image at a
    time for full-resolution ones (their sizes differ)."""
    if not decoded:
        return
    if is_full_resolution(key):
        for index, tensors in decoded:
            yield [index], tensors[key].unsqueeze(0)
    else:
        yield [i for i, _ in decoded], torch.stack([t[key] for _, t in decoded])


def _add_error(result: ImageResult, message: str) -> None:
    if message not in result.error:
        result.error = f"{result.error}; {message}" if result.error else message


def score_images(
    paths: Sequence[str | os.PathLike],
    models: Sequence[str] = DEFAULT_MODELS,
    weights_dir: str | os.PathLike = "weights",
    device: str | None = None,
    fusion: str | None = DEFAULT_FUSION,
    batch_size: int | None = None,
    num_workers: int | None = None,
    backbone_weights: str | os.PathLike | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Score image files; returns a DataFrame with ``filename``, one LLR column per model,
    ``fusion`` (unless ``fusion`` is None or "none") and ``error`` (empty when fine)."""
    device = device or default_device()
    loaded = load_models(models, weights_dir, backbone_weights, device)
    paths = [str(p) for p in paths]
    scores = np.full((len(paths), len(loaded)), np.nan)
    errors = [""] * len(paths)
    for result in iter_scores(
        loaded,
        paths,
        device=device,
        batch_size=batch_size or default_batch_size(device),
        num_workers=default_num_workers() if num_workers is None else num_workers,
        progress=progress,
    ):
        scores[result.index] = result.scores
        errors[result.index] = result.error
    return build_table(paths, [m.name for m in loaded], scores, errors, fusion)
