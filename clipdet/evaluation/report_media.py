"""The report's pictures and video cards: image thumbnails and videos' frame strips as JPEG
data URIs (made in parallel processes), each video row's facts and its frame scores over
time."""

import base64
import io
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd

from clipdet.constants import (
    DURATION_COLUMN,
    FILENAME_COLUMN,
    FRAME_MAX_COLUMN,
    FRAMES_COLUMN,
    FUSION_COLUMN,
    TEMPORAL_COLUMN,
    TIME_COLUMN,
)

THUMB_SIDE = 192
STRIP_FRAMES = 8  # a video card shows up to this many of its sampled frames
STRIP_SIDE = 96


def jpeg_uri(image, side: int) -> str:
    """A PIL image shrunk to fit ``side`` pixels, as a JPEG data URI."""
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def make_thumbnail(path: str) -> str | None:
    """A JPEG thumbnail as a data URI (None when the image cannot be read)."""
    from clipdet.pipeline.images import load_rgb

    try:
        image = load_rgb(path, min_side=THUMB_SIDE)  # a JPEG at a reduced scale: shrunk anyway
    except OSError:
        return None
    return jpeg_uri(image, THUMB_SIDE)


def make_video_strip(job: tuple[str, tuple[float, ...]]) -> list[tuple[float, str]]:
    """(time, JPEG data URI) of the frames a video shows at the given times (an empty list
    when it cannot be read)."""
    from clipdet.pipeline.video import FrameSampling, open_video

    path, times = job
    strip = []
    try:
        with open_video(path, None, FrameSampling(times=times, animated="video")) as reader:
            for frame in reader.frames():
                strip.append((frame.time, jpeg_uri(frame.image, STRIP_SIDE)))
    except OSError:
        return strip
    return strip


def _thumbnail_job(job):
    return make_video_strip(job) if isinstance(job, tuple) else make_thumbnail(job)


def make_thumbnails(paths: list, workers: int | None = None) -> list:
    """Thumbnails in parallel processes; rows without a path get None. A row given as
    (path, times) is a video: its strip of frames (``make_video_strip``)."""
    todo = [i for i, p in enumerate(paths) if p]
    found: list[str | None] = [None] * len(paths)
    if not todo:
        return found
    workers = workers or min(8, os.cpu_count() or 1)
    if workers <= 1 or len(todo) < 8:
        results = map(_thumbnail_job, [paths[i] for i in todo])
        for i, uri in zip(todo, results, strict=True):
            found[i] = uri
        return found
    with ProcessPoolExecutor(workers) as pool:
        results = pool.map(_thumbnail_job, [paths[i] for i in todo], chunksize=16)
        for i, uri in zip(todo, results, strict=True):
            found[i] = uri
    return found


def finite_number(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def frame_curves(frames: pd.DataFrame | None, detectors: list[str]) -> dict[str, list]:
    """Each video's frame scores over time, from a run's frames table: [time, score] pairs,
    the score being the frames' fusion, else their largest LLR."""
    if frames is None or not len(frames):
        return {}
    models = [c for c in frames.columns if c in detectors]
    score = frames[FUSION_COLUMN] if FUSION_COLUMN in frames else frames[models].max(axis=1)
    curves = {}
    for name, part in frames.assign(_score=score).groupby(FILENAME_COLUMN, sort=False):
        pairs = zip(part[TIME_COLUMN], part["_score"], strict=True)
        curves[str(name)] = [[finite_number(t), finite_number(v)] for t, v in pairs]
    return curves


def video_rows(table: pd.DataFrame, rows: list[dict], jobs: list, curves: dict) -> None:
    """Give each video row its facts and frame curve (``row["video"]``), and its job the times
    of up to ``STRIP_FRAMES`` of its scored frames (the strip's)."""
    from clipdet.pipeline.video_sampling import FrameSampling

    if FRAMES_COLUMN not in table.columns:
        return
    for i, row in enumerate(rows):
        count = finite_number(table[FRAMES_COLUMN].iloc[i])
        if count is None:
            continue
        duration = finite_number(table[DURATION_COLUMN].iloc[i]) or 0.0
        curve = curves.get(row["name"], [])
        row["video"] = {
            "frames": int(count),
            "duration": duration,
            "temporal": finite_number(table[TEMPORAL_COLUMN].iloc[i]),
            "frame_max": finite_number(table[FRAME_MAX_COLUMN].iloc[i]),
            "curve": curve,
        }
        times = [t for t, _ in curve]
        if not times:  # no frames table: the uniform sampling's times, as the run had them
            times = FrameSampling(frames=int(count)).targets(duration)
        if len(times) > STRIP_FRAMES:
            times = [times[round(k * (len(times) - 1) / (STRIP_FRAMES - 1))]
                     for k in range(STRIP_FRAMES)]  # fmt: skip
        if jobs[i] is not None:
            jobs[i] = (jobs[i], tuple(times))


def text_of(value) -> str:
    """A table cell as text: empty for None and NaN."""
    return "" if value is None or pd.isna(value) else str(value)
