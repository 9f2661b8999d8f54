"""Videos the tests make with PyAV: any codec the wheel carries, stills or moving patterns,
constant or variable frame rate, rotation metadata."""

from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np


def pattern(width: int, height: int, seed: int) -> np.ndarray:
    """A deterministic RGB frame: smooth gradients plus noise (not trivially compressible)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1),
                     (x + y) * 127 // max(1, width + height - 2)], axis=-1)  # fmt: skip
    noise = rng.integers(-40, 40, size=(height, width, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def write_video(
    path: Path,
    frame: Callable[[int], np.ndarray] | Sequence[np.ndarray],
    count: int | None = None,
    *,
    fps: int = 8,
    codec: str = "ffv1",
    pix_fmt: str | None = None,
    gop: int | None = None,
    rotation: int | None = None,
    times: Sequence[float] | None = None,
    metadata: dict | None = None,
    options: dict | None = None,
) -> Path:
    """Write ``count`` frames (``frame(k)`` gives frame k, or a list of frames) to ``path``.
    ``times`` (seconds) make a variable frame rate; ``gop`` the keyframe interval (a large one:
    a single keyframe, as generated clips have); ``rotation`` a display rotation in degrees."""
    import av

    frames = frame if callable(frame) else (lambda k, f=frame: f[k])
    count = count if count is not None else len(frame)
    first = frames(0)
    height, width = first.shape[:2]
    with av.open(str(path), mode="w") as container:
        if metadata:
            container.metadata.update(metadata)
        stream = container.add_stream(codec, rate=fps, options=options or {})
        stream.width, stream.height = width, height
        stream.pix_fmt = pix_fmt or ("yuv420p" if codec not in ("ffv1", "png") else "bgr0")
        if codec == "png":
            stream.pix_fmt = pix_fmt or "rgb24"
        if gop is not None:
            stream.codec_context.gop_size = gop
        if times is not None:
            stream.time_base = Fraction(1, 1000)
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for k in range(count):
            video_frame = av.VideoFrame.from_ndarray(frames(k), format="rgb24")
            if times is not None:
                video_frame.pts = round(times[k] * 1000)
                video_frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
