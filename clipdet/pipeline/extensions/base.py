"""The row extension protocol (see clipdet.pipeline.extensions) and what the prepare stage
hands an extension."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from clipdet.pipeline.columns import Column


@dataclass
class FileSource:
    """What the prepare stage has read of one image: its path, its bytes (always, when the
    extension ``reads_bytes``) and its decoded RGB pixels before any perturbation (when it
    ``reads_pixels``; None in ``prepare_failed``)."""

    path: str
    data: bytes | None
    pixels: np.ndarray | None = None


@dataclass
class VideoSource:
    """What the prepare stage has read of one video: its path, its bytes when read whole,
    its container's tags and the (width, height) of its frames."""

    path: str
    data: bytes | None
    tags: dict
    size: tuple[int, int]


@dataclass
class Frames:
    """A video's scored frames, for ``fold_frames``: their times (s), each detector's LLR per
    frame ([frames, detectors]), the duration and, when the run has a frozen backbone, the
    frames' L2-normalised features from its first one ([frames, D]; None otherwise)."""

    times: np.ndarray
    scores: np.ndarray
    duration: float
    embeddings: np.ndarray | None


class RowExtension:
    """The base of every row extension; the defaults do nothing (see the package docstring).
    ``ExtensionClass()`` with no argument must give an instance that can read stored values
    and name its columns."""

    name: ClassVar[str]  # its key in a record's extras and JSON form
    reads_bytes: ClassVar[bool] = False
    reads_pixels: ClassVar[bool] = False  # (a GPU decoding of JPEGs is then not used)
    reads_embedding: ClassVar[bool] = False  # fold_embedding gets the features of a model
    embedding_model: str | None = None  # ... this one (None: the first frozen backbone's)

    @classmethod
    def from_options(cls, options, paths: Sequence[str] | None = None) -> "RowExtension | None":
        """The extension for a run with ``options`` (resolved) on ``paths`` (None: not known
        ahead, a stream), or None when it is off."""
        raise NotImplementedError

    @classmethod
    def from_models(cls, models: Sequence) -> "RowExtension | None":
        """The extension a run's loaded ``models`` (``LoadedModel``s) turn on, or None; asked
        when ``from_options`` gave None (and not where the models are not known)."""
        return None

    def signature(self) -> dict:
        return {}

    def columns(self) -> tuple[Column, ...]:
        raise NotImplementedError

    def prepare_image(self, source: FileSource) -> Any:
        return None

    def prepare_failed(self, source: FileSource) -> Any:
        return None

    def prepare_video(self, source: VideoSource) -> Any:
        return None

    def prepare_perturbed(self, value: Any, perturbed) -> Any:
        """Under --perturb (in the prepare stage): the row's value given what the perturbation
        made of the image (a ``clipdet.pipeline.perturb.Perturbed``: the image judged, the
        operations applied)."""
        return value

    def fold_frames(self, value: Any, frames: Frames) -> Any:
        return value

    def fold_views(self, value: Any, scores: np.ndarray) -> Any:
        """In the infer stage, for an image scored with views (--views): the row's value
        given each view's detector LLRs ([views, detectors])."""
        return value

    def fold_embedding(self, value: Any, embedding: np.ndarray | None) -> Any:
        """With ``reads_embedding``, in the infer stage: the row's value given the features
        ``embedding_model``'s head reads ([D]; a video's: its frames' mean; None where the
        model has none for the row)."""
        return value

    def table_columns(self, values: dict[int, Any], n_rows: int, fusion: str | None) -> dict:
        """Column name -> ``n_rows`` values, from ``values`` (row -> value; rows without one
        get the empty value)."""
        raise NotImplementedError

    def to_json(self, value: Any) -> Any:
        return value

    def from_json(self, stored: Any, n_detectors: int) -> Any:
        """The value ``to_json`` wrote; ValueError (or KeyError, TypeError) when malformed."""
        return stored


def values_array(values: dict[int, Any], n_rows: int, width: int | None = None) -> np.ndarray:
    """Rows' values as floats, NaN for the rows without one: [n_rows], or [n_rows, width]
    for values of ``width`` numbers (what ``table_columns`` of numeric columns starts from)."""
    array = np.full((n_rows,) if width is None else (n_rows, width), np.nan)
    for index, value in values.items():
        array[index] = value
    return array
