"""A video's summary, when a run has videos: how many frames were scored (``frames``), the
duration (``duration_s``), the temporal statistic of the frame features (``temporal``) and the
largest frame score (``frame_max``); NaN for images. The frames' own scores are kept with the
row for ``--frames_out`` and the report (``frame_table``)."""

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from clipdet.constants import (
    DURATION_COLUMN,
    FILENAME_COLUMN,
    FRAME_COLUMN,
    FRAME_MAX_COLUMN,
    FRAMES_COLUMN,
    FUSION_COLUMN,
    NO_FUSION,
    TEMPORAL_COLUMN,
    TIME_COLUMN,
    VIDEO_COLUMNS,
)
from clipdet.pipeline.columns import VIDEO, Column
from clipdet.pipeline.extensions.base import Frames, RowExtension


@dataclass
class VideoResult:
    """A video's frames: their times, each detector's LLR per frame, the duration and the
    temporal statistic of its frame features (``temporal_statistic``)."""

    times: np.ndarray  # [frames] seconds from the start
    frame_scores: np.ndarray  # [frames, detectors]
    duration_s: float
    temporal: float

    @property
    def frames(self) -> int:
        return len(self.times)


def temporal_statistic(features: np.ndarray) -> float:
    """D3-style (Zheng et al., ICCV 2025): the standard deviation over time of the norms of
    the second differences of a video's L2-normalised frame features, [frames, D] in time
    order (the paper reports that they fluctuate more in real videos than in generated ones).
    NaN below 4 frames (the spread of fewer than 2 second differences says nothing)."""
    if len(features) < 4:
        return float("nan")
    second = np.diff(np.asarray(features, dtype=np.float64), n=2, axis=0)
    return float(np.linalg.norm(second, axis=1).std())


class VideoSummary(RowExtension):
    """Each video row's value: its ``VideoResult``; images have none."""

    name = "video"

    @classmethod
    def from_options(cls, options, paths=None):
        """On when one of ``paths`` is a video (always for a stream, whose files are not
        known ahead)."""
        from clipdet.pipeline.video_sampling import FrameSampling

        sampling = FrameSampling.of(options)
        return cls() if paths is None or any(sampling.is_video(str(p)) for p in paths) else None

    def columns(self) -> tuple[Column, ...]:
        return tuple(Column(name, VIDEO) for name in VIDEO_COLUMNS)

    def fold_frames(self, value, frames: Frames) -> VideoResult:
        """The temporal statistic is NaN unless every frame has its features."""
        complete = frames.embeddings is not None
        temporal = temporal_statistic(frames.embeddings) if complete else float("nan")
        return VideoResult(np.asarray(frames.times), frames.scores, frames.duration, temporal)

    def table_columns(self, values: dict, n_rows: int, fusion=None) -> dict:
        """frame_max: the largest frame score (the frames' fusion, or their largest LLR)."""
        columns = {name: np.full(n_rows, np.nan) for name in VIDEO_COLUMNS}
        for index, video in values.items():
            columns[FRAMES_COLUMN][index] = video.frames
            columns[DURATION_COLUMN][index] = video.duration_s
            columns[TEMPORAL_COLUMN][index] = video.temporal
            columns[FRAME_MAX_COLUMN][index] = _nanmax(frame_decisions(video, fusion))
        return columns

    def to_json(self, video: VideoResult) -> dict:
        return {
            "times": _json_list(video.times),
            "frame_scores": [_json_list(frame) for frame in video.frame_scores],
            "duration_s": float(video.duration_s),
            "temporal": _json_list(np.array([video.temporal]))[0],
        }

    def from_json(self, stored, n_detectors: int) -> VideoResult:
        times = _array(stored["times"])
        frame_scores = np.array([_array(row) for row in stored["frame_scores"]], dtype=float)
        if frame_scores.shape != (len(times), n_detectors):
            raise ValueError("wrong number of frame scores")
        temporal = stored["temporal"]
        return VideoResult(times, frame_scores, float(stored["duration_s"]),
                           float("nan") if temporal is None else float(temporal))  # fmt: skip


def frame_decisions(video: VideoResult, fusion: str | None) -> np.ndarray:
    """Each frame's decision score: the fusion of its detector LLRs, else the largest."""
    from clipdet.pipeline.fusion import apply_fusion

    scores = video.frame_scores
    if scores.shape[1] == 0:
        return np.full(len(scores), np.nan)
    if fusion and fusion != NO_FUSION:
        return apply_fusion(scores, fusion, axis=1)
    return scores.max(axis=1)


def frame_table(
    videos: dict[int, VideoResult],
    filenames: Sequence[str],
    detectors: Sequence[str],
    fusion: str | None,
) -> pd.DataFrame:
    """One row per scored frame of every video (``videos``: row -> its result): filename,
    frame, time_s, one LLR column per detector (named as in the main table) and their
    fusion."""
    from clipdet.pipeline.fusion import apply_fusion

    parts = []
    for index in sorted(videos):
        video = videos[index]
        part = pd.DataFrame({FILENAME_COLUMN: [filenames[index]] * video.frames,
                             FRAME_COLUMN: np.arange(video.frames),
                             TIME_COLUMN: video.times})  # fmt: skip
        for column, name in enumerate(detectors):
            part[name] = video.frame_scores[:, column]
        if fusion and fusion != NO_FUSION and detectors:
            part[FUSION_COLUMN] = apply_fusion(video.frame_scores, fusion, axis=1)
        parts.append(part)
    if parts:
        return pd.concat(parts, ignore_index=True)
    return pd.DataFrame(columns=[FILENAME_COLUMN, FRAME_COLUMN, TIME_COLUMN, *detectors])


def _nanmax(values: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size else float("nan")


def _array(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _json_list(values: np.ndarray) -> list:
    return [None if not np.isfinite(v) else float(v) for v in values]
