"""Reading videos: frames sampled over a video's duration and decoded one at a time, so that
memory holds the sampled frames, never the video.

Videos (by extension, ``video_sampling.VIDEO_EXTENSIONS``, or a file no image decoder reads
that PyAV does) are decoded with PyAV (FFmpeg's libraries in its wheel; the optional ``video``
extra). Animated GIF, WebP and PNG files are images unless the run asks
for ``--animated video``; their frames are then read with Pillow, which decodes the animated
WebPs that FFmpeg reads as 0x0.

Sampling: ``frames`` target times spread uniformly over the duration, at the middle of N equal
spans, or with ``fps`` one target every 1/fps seconds (at most ``MAX_FRAMES``). A target takes
the frame shown at that time: the last frame whose time is at or before it. Each frame is
decoded forward from the nearest keyframe before it: the decoder seeks when the next target is
more than ``SEEK_AHEAD_S`` ahead and gives up seeking for the video once a seek lands no further
than it already was (a video with one keyframe, as many generated clips have, where a seek then
"the next frame" would return the first frame for every target). A frame shown at several
targets (a clip shorter than N frames) is kept once.
"""

import io
import logging
import math
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageSequence

from clipdet import storage
from clipdet.pipeline.images import MAX_IMAGE_PIXELS, ImageLoadError, read_image_bytes
from clipdet.pipeline.video_sampling import (
    ANIMATED_EXTENSIONS,
    FrameSampling,
    SampledFrame,
    VideoHeader,
    file_suffix,
)

logger = logging.getLogger(__name__)

SEEK_AHEAD_S = 2.0  # decode forward to a target closer than this; seek to farther ones


class VideoLoadError(ImageLoadError):
    """A video that cannot be read; the message says why."""


def open_video(
    path: str, data: bytes | None, sampling: FrameSampling, container: bool = False
) -> "VideoReader":
    """A reader of ``path`` (a local file or a URL; ``data``: its bytes, already read);
    ``container``: read with PyAV whatever its extension (a file found to be a video by its
    content)."""
    if file_suffix(path) in ANIMATED_EXTENSIONS and not container:
        return AnimatedImageReader(path, data, sampling)
    return PyAVReader(path, data, sampling)


class VideoReader:
    """``header`` once opened; ``frames()`` yields the sampled frames one at a time. Use as a
    context manager (the container is closed on exit)."""

    header: VideoHeader
    still = False  # an image file with a single frame (read as the image it is)

    def __init__(self, path: str, data: bytes | None, sampling: FrameSampling):
        self.path = str(path)
        self.sampling = sampling
        self.deadline = time.monotonic() + sampling.timeout_s
        if data is None and storage.is_url(self.path):
            data = read_image_bytes(self.path)
        if data is None:
            local = Path(self.path)
            if not local.is_file():
                what = "is a directory, not a video" if local.is_dir() else "file not found"
                raise VideoLoadError(f"{what}: {local}")
            if local.stat().st_size == 0:
                raise VideoLoadError(f"empty file: {local}")
        self.data = data

    def source(self):
        return io.BytesIO(self.data) if self.data is not None else self.path

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise VideoLoadError(
                f"decoding took longer than {self.sampling.timeout_s:g} s "
                f"(--video_timeout): {self.path}"
            )

    def check_size(self, width: int, height: int, decoded: bool = True) -> None:
        """The image bomb guard, on a frame's pixels (or on the size a header declares:
        ``decoded`` False, where 0x0 means not yet known)."""
        if width * height > MAX_IMAGE_PIXELS:
            raise VideoLoadError(
                f"video frames too large ({width}x{height} pixels, limit {MAX_IMAGE_PIXELS}): "
                f"{self.path}"
            )
        if decoded and (width < 1 or height < 1):
            raise VideoLoadError(f"video frames of {width}x{height} pixels: {self.path}")

    def frames(self) -> Iterator[SampledFrame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _import_av():
    try:
        import av
    except ImportError as e:
        raise VideoLoadError(
            "reading videos needs PyAV: pip install av (or pip install 'clipdet[video]')"
        ) from e
    return av


class PyAVReader(VideoReader):
    """A video container read with PyAV: its first video stream, frames converted to RGB and
    turned upright by the stream's display matrix."""

    def __init__(self, path: str, data: bytes | None, sampling: FrameSampling):
        super().__init__(path, data, sampling)
        av = _import_av()
        self.av = av
        try:
            self.container = av.open(self.source(), mode="r", metadata_errors="replace")
        except av.FFmpegError as e:
            raise VideoLoadError(f"not a readable video ({_ffmpeg_message(e)}): {path}") from e
        try:
            self._read_header()
        except Exception:
            self.container.close()
            raise

    def _read_header(self) -> None:
        streams = self.container.streams.video
        if not streams:
            kinds = sorted({s.type for s in self.container.streams}) or ["none"]
            raise VideoLoadError(f"no video stream (streams: {', '.join(kinds)}): {self.path}")
        self.stream = stream = streams[0]
        self.check_size(stream.codec_context.width, stream.codec_context.height, decoded=False)
        self.start = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        tags = {f"container:{k}": v for k, v in self.container.metadata.items()}
        tags.update({f"stream:{k}": v for k, v in stream.metadata.items()})
        self.header = VideoHeader(self._duration(), tags)

    def _duration(self) -> float:
        stream = self.stream
        if stream.duration and stream.time_base:
            return float(stream.duration * stream.time_base)
        if self.container.duration:
            return self.container.duration / self.av.time_base - self.start
        if stream.frames and stream.average_rate:
            return float(stream.frames / stream.average_rate)
        return self._scan_duration()

    def _scan_duration(self) -> float:
        """The end of the last packet, read without decoding (containers that do not record
        a duration, e.g. streamed WebM), then back to the start."""
        end = None
        try:
            for packet in self.container.demux(self.stream):
                self.check_time()
                if packet.pts is not None and packet.time_base:
                    last = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                    end = last if end is None else max(end, last)
        except self.av.FFmpegError as e:  # a truncated file: its duration is what is there
            logger.debug("%s: scan stopped (%s)", self.path, _ffmpeg_message(e))
        self.container.seek(0, stream=self.stream)
        return 0.0 if end is None else max(0.0, end - self.start)

    def _decoded(self) -> Iterator:
        """Decoded frames from the container's position on. A damaged packet is skipped, as
        players skip it; a container that cannot be read further (a truncated file) ends the
        video there: the frames before it are kept."""
        packets = self.container.demux(self.stream)
        while True:
            self.check_time()
            try:
                packet = next(packets, None)
            except self.av.FFmpegError as e:
                logger.warning("%s: video ends early (%s)", self.path, _ffmpeg_message(e))
                return
            if packet is None:
                return
            try:
                frames = packet.decode()
            except self.av.FFmpegError as e:
                logger.debug("%s: packet not decoded (%s)", self.path, _ffmpeg_message(e))
                continue
            yield from frames

    def frames(self) -> Iterator[SampledFrame]:
        targets = self.sampling.targets(self.header.duration)
        stream = self.stream
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        decoded = self._decoded()
        current = lookahead = None  # (frame, time): the frame shown now, the next one
        position, shown, count = -math.inf, -math.inf, 0
        seekable, landing = True, False
        try:
            for target in targets:
                if seekable and target - max(position, 0.0) > SEEK_AHEAD_S:
                    seekable = self._seek(target)
                    if seekable:
                        decoded, current, lookahead, landing = self._decoded(), None, None, True
                while True:  # decode forward to the last frame at or before the target
                    if lookahead is None:
                        frame = next(decoded, None)
                        if frame is None:
                            break
                        t = _frame_time(frame, self.start, count, rate)
                        count += 1
                        if landing and t <= position:  # no keyframe in between: never again
                            seekable = False
                        landing, position = False, max(position, t)
                        lookahead = (frame, t)
                    if lookahead[1] > target and current is not None:
                        break
                    current, lookahead = lookahead, None
                    if current[1] >= target:
                        break
                if current is None or current[1] <= shown:
                    continue  # no frame, or the one shown at the previous target
                shown = current[1]
                yield SampledFrame(shown, self._image(current[0]))
        except self.av.FFmpegError as e:
            raise VideoLoadError(f"cannot decode video ({_ffmpeg_message(e)}): {self.path}") from e

    def _seek(self, target: float) -> bool:
        """Seek to the keyframe at or before ``target``; False where the container cannot (the
        video is then decoded forward from where it is)."""
        stream = self.stream
        try:
            self.container.seek(int((target + self.start) / stream.time_base), stream=stream,
                                backward=True)  # fmt: skip
        except self.av.FFmpegError as e:
            logger.debug("%s: cannot seek (%s): decoding forward", self.path, _ffmpeg_message(e))
            return False
        return True

    def _image(self, frame) -> Image.Image:
        self.check_size(frame.width, frame.height)
        image = frame.to_image()  # RGB24 through swscale, whatever the pixel format
        rotation = round(getattr(frame, "rotation", 0) or 0) % 360
        turns = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180,
                 270: Image.Transpose.ROTATE_270}  # fmt: skip
        if rotation in turns:  # counterclockwise, as the display matrix says
            image = image.transpose(turns[rotation])
        elif rotation:
            image = image.rotate(rotation, expand=True)
        return image.convert("RGB")

    def close(self) -> None:
        self.container.close()


def _frame_time(frame, start: float, count: int, rate: float) -> float:
    """A frame's time from the video's start: its timestamp, else its position / frame rate."""
    if frame.pts is not None and frame.time_base:
        return float(frame.pts * frame.time_base) - start
    return count / rate


def _ffmpeg_message(error: Exception) -> str:
    return str(getattr(error, "strerror", None) or error).strip()


class AnimatedImageReader(VideoReader):
    """An animated GIF, WebP or PNG read with Pillow, its frames timed by their durations."""

    def __init__(self, path: str, data: bytes | None, sampling: FrameSampling):
        super().__init__(path, data, sampling)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                self.image = Image.open(self.source())
                self.check_size(*self.image.size)
                starts, total = [], 0.0
                for frame in ImageSequence.Iterator(self.image):
                    self.check_time()
                    starts.append(total)
                    total += max(0, frame.info.get("duration", 0) or 0) / 1000.0
        except ImageLoadError:
            raise
        except Exception as e:  # noqa: BLE001 -- Pillow's many decoder errors
            raise VideoLoadError(f"not a readable animation ({e}): {path}") from e
        self.starts = starts
        self.still = len(starts) == 1
        self.header = VideoHeader(total)

    def frames(self) -> Iterator[SampledFrame]:
        targets = self.sampling.targets(self.header.duration)
        shown = -1
        try:
            for target in targets:
                k = max(0, max(i for i, s in enumerate(self.starts) if s <= target))
                if k <= shown:
                    continue
                shown = k
                self.check_time()
                self.image.seek(k)
                yield SampledFrame(self.starts[k], self.image.convert("RGB"))
        except ImageLoadError:
            raise
        except Exception as e:  # noqa: BLE001
            raise VideoLoadError(f"cannot decode animation ({e}): {self.path}") from e

    def close(self) -> None:
        self.image.close()
