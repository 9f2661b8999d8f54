"""Which frames of a video are scored, and the plain data a video's reading gives: the
extensions that make a file a video, ``FrameSampling`` (frames over the duration, or a rate),
a container's header, the sample the prepare stage keeps and one decoded frame."""

import math
import os
from dataclasses import dataclass, field

from PIL import Image

from clipdet import storage

VIDEO_EXTENSIONS = (
    ".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi", ".mpg", ".mpeg", ".m2ts", ".mts", ".ts",
    ".3gp", ".wmv", ".flv", ".ogv", ".vob", ".mxf",
)  # fmt: skip
ANIMATED_EXTENSIONS = (".gif", ".webp", ".png", ".apng")
ANIMATED_MODES = ("image", "video")  # an animated image: its first frame, or a video
DEFAULT_FRAMES = 16
DEFAULT_TIMEOUT_S = 120.0
MAX_FRAMES = 1024  # --video_fps on a long video samples no more than this


@dataclass(frozen=True)
class FrameSampling:
    """Which frames a video gives: ``frames`` spread over its duration, or one every
    1/``fps`` seconds, or the frames shown at given ``times`` (seconds; the report's strips);
    ``timeout_s`` bounds one video's decoding; ``animated`` says whether animated images are
    images (their first frame) or videos."""

    frames: int = DEFAULT_FRAMES
    fps: float | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    animated: str = "image"
    times: tuple[float, ...] | None = None

    def __post_init__(self):
        if self.frames < 1:
            raise ValueError(f"--video_frames must be >= 1, got {self.frames}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"--video_fps must be > 0, got {self.fps}")
        if not self.timeout_s > 0:
            raise ValueError(f"--video_timeout must be > 0, got {self.timeout_s}")
        if self.animated not in ANIMATED_MODES:
            raise ValueError(
                f"unknown --animated {self.animated!r}; valid choices: {', '.join(ANIMATED_MODES)}"
            )

    @classmethod
    def of(cls, options) -> "FrameSampling":
        """The sampling a run's options (``clipdet.options.RunOptions``) ask for."""
        return cls(options.video_frames, options.video_fps, options.video_timeout,
                   options.animated)  # fmt: skip

    def targets(self, duration: float) -> list[float]:
        """The times (seconds from the start) whose frames are sampled."""
        if self.times is not None:
            return sorted(self.times)
        if not duration > 0:  # unknown or a single frame: the first one
            return [0.0]
        if self.fps is not None:
            count = min(MAX_FRAMES, max(1, math.ceil(duration * self.fps - 0.5)))
            return [(k + 0.5) / self.fps for k in range(count)]
        return [duration * (k + 0.5) / self.frames for k in range(self.frames)]

    def is_video(self, path: str) -> bool:
        """Whether ``path`` is read as a video by its extension (a file of another extension
        that no image decoder reads is tried as a video too: ``prepare.Preparer``)."""
        suffix = file_suffix(path)
        return suffix in VIDEO_EXTENSIONS or (
            self.animated == "video" and suffix in ANIMATED_EXTENSIONS
        )


def file_suffix(path: str) -> str:
    """The extension, lower case: of a URL's path (its query left out), of a local file's name
    (a WebDataset sample's ``shard.tar#key.mp4`` gives ".mp4")."""
    name = str(path)
    if storage.is_url(name):
        name = name.split("?", 1)[0]
    return os.path.splitext(name)[1].lower()


@dataclass
class VideoHeader:
    """What a video's container says: its duration (seconds) and the container's and
    stream's tags (encoder, handler names)."""

    duration: float
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VideoSample:
    """What the prepare stage sampled of a video: each frame's time and the duration."""

    times: tuple[float, ...]
    duration: float


@dataclass
class SampledFrame:
    time: float  # seconds from the video's start
    image: Image.Image  # RGB, upright as players show it
