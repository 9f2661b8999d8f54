"""The *prepare* stage: (row index, path) -> preprocessed tensors per transform, or an error.

A pure function of its inputs, picklable, with no torch device: any engine can run it where
images are decoded (DataLoader workers here, CPU tasks on a cluster). Features already in the
feature cache are returned instead of tensors (that image's backbone pass is skipped).
"""

import hashlib
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from clipdet import storage
from clipdet.files import sha256_of
from clipdet.models.preprocess import PreprocessCfg
from clipdet.pipeline.extensions import FileSource, RowExtension, VideoSource
from clipdet.pipeline.feature_cache import FeatureCache
from clipdet.pipeline.gpu_decode import encoded_jpeg
from clipdet.pipeline.images import ImageLoadError, describe_error, load_rgb, read_image_bytes
from clipdet.pipeline.video import VideoLoadError, open_video
from clipdet.pipeline.video_sampling import FrameSampling, VideoSample

VIDEO_REFUSED = "a video: training takes images (extract the video's frames)"


@dataclass
class PreparedItem:
    index: int  # the caller's row index, unchanged end to end
    tensors: dict[str, torch.Tensor]  # transform key -> preprocessed image
    cached: dict[str, np.ndarray]  # feature group key -> features found in the cache
    digest: str | None  # sha256 of the file (when the feature cache is used)
    error: str  # empty when fine
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds (--profile)
    encoded: torch.Tensor | None = None  # --decode gpu: the JPEG's bytes, decoded by infer
    wanted: tuple[PreprocessCfg, ...] = ()  # what the infer stage makes of ``encoded``
    extras: dict = field(default_factory=dict)  # row extension name -> its value
    video: VideoSample | None = None  # a video: its frames' times (tensors are [frames, ...])
    views: list[dict[str, torch.Tensor]] = field(default_factory=list)  # --views: as tensors

    def pin_memory(self) -> "PreparedItem":
        """Called by the DataLoader (pin_memory=True on CUDA) for fast non-blocking copies."""
        self.tensors = {key: t.pin_memory() for key, t in self.tensors.items()}
        self.views = [{key: t.pin_memory() for key, t in view.items()} for view in self.views]
        return self


@dataclass(frozen=True)
class CachedGroup:
    """What prepare needs to know of a cacheable feature group."""

    key: str
    transform_key: str
    namespace: str
    width: int


@dataclass(frozen=True)
class PrepareSettings:
    """How the prepare stage reads files, resolved once from a run's options: ``timed``
    records read+decode and preprocess seconds in each item (--profile); ``min_side`` decodes
    JPEGs at a reduced scale (--decode fast); ``encode`` leaves JPEGs encoded for the infer
    stage (--decode gpu); ``extensions``: the run's row extensions; ``video``: which files are
    videos and which of their frames are scored (None: videos are refused undecoded, as
    training and sweeps take images); ``views``: perturbations each image is also scored
    under (--views; of the decoded image, after --perturb)."""

    timed: bool = False
    min_side: int | None = None
    encode: bool = False
    extensions: tuple[RowExtension, ...] = ()
    video: FrameSampling | None = None
    views: tuple = ()


class Preparer:
    """Decode, perturb and preprocess one image for every transform that a model still needs.

    ``transforms``: transform key -> callable PIL image -> tensor; ``needs``: the
    preprocessing of every feature group; ``cached``: the cacheable groups (with ``cache``);
    ``perturbation``: called as ``perturbation(image, row_index)`` before preprocessing;
    ``settings``: the rest, as the run's options say."""

    def __init__(
        self,
        transforms: dict,
        needs: dict[str, PreprocessCfg],
        cached: tuple[CachedGroup, ...] = (),
        cache: FeatureCache | None = None,
        perturbation=None,
        settings: PrepareSettings = PrepareSettings(),  # noqa: B008 -- frozen, shared
    ):
        self.transforms = transforms
        self.needs = needs  # group key -> its preprocessing
        self.cached_groups = cached if cache is not None else ()
        self.cache = cache
        self.perturbation = perturbation
        self.settings = settings
        self.timed, self.min_side, self.encode = settings.timed, settings.min_side, settings.encode
        self.extensions, self.video = settings.extensions, settings.video
        self.views = settings.views

    def __call__(self, index: int, path: str, data: bytes | None = None) -> PreparedItem:
        """``data``: the image's bytes when the caller has them (a tar member), else read
        from ``path`` (once, for the digest, the row extensions and the decoding alike)."""
        item = PreparedItem(index, {}, {}, None, "")
        if (self.video or FrameSampling()).is_video(path):
            if self.video is None:
                item.error = VIDEO_REFUSED
                return item
            return self._prepare_video(item, path, data)
        return self._prepare_image(item, path, data)

    def _prepare_image(self, item: PreparedItem, path: str, data: bytes | None) -> PreparedItem:
        index = item.index
        on_bytes = [ext for ext in self.extensions if not ext.reads_pixels]
        on_pixels = [ext for ext in self.extensions if ext.reads_pixels]
        try:
            if any(ext.reads_bytes for ext in self.extensions) and data is None:
                data = read_image_bytes(path)
            for ext in on_bytes:
                _keep(item, ext, ext.prepare_image(FileSource(path, data)))
            if self.cached_groups:
                if storage.is_url(path) or data is not None:
                    data = data if data is not None else read_image_bytes(path)
                    item.digest = hashlib.sha256(data).hexdigest()
                else:
                    item.digest = _digest(path)  # content key
                for g in self.cached_groups:
                    found = self.cache.get(g.namespace, item.digest, g.width)
                    if found is not None:
                        item.cached[g.key] = found
            wanted = {t for key, t in self.needs.items() if key not in item.cached}
            if wanted and self.encode:
                data = data if data is not None else _read_or_none(path)
                item.encoded = encoded_jpeg(data, path) if data is not None else None
                if item.encoded is not None:
                    item.wanted = tuple(sorted(wanted, key=lambda cfg: cfg.key))
                    return item
            if wanted or on_pixels:
                start = time.perf_counter()
                image = load_rgb(path, data, self.min_side)
                decoded = time.perf_counter()
                if on_pixels:  # the same pixels, before any perturbation
                    source = FileSource(path, data, np.asarray(image))
                    for ext in on_pixels:
                        _keep(item, ext, ext.prepare_image(source))
                if self.perturbation is not None:
                    perturbed = self.perturbation(image, index)
                    image = perturbed.image
                    for ext in self.extensions:
                        _keep(item, ext, ext.prepare_perturbed(item.extras.get(ext.name),
                                                               perturbed))  # fmt: skip
                item.tensors = {cfg.key: self.transforms[cfg.key](image) for cfg in wanted}
                for view in self.views:  # the same decoded image, in memory
                    seen = view(image, index).image
                    item.views.append({cfg.key: self.transforms[cfg.key](seen) for cfg in wanted})
                if self.timed:
                    item.timings = {
                        "read+decode": decoded - start,
                        "preprocess": time.perf_counter() - decoded,
                    }
        except Exception as e:  # one bad file must not stop the batch
            if self.video is not None and getattr(e, "unidentified", False):
                found = self._video_by_content(index, path, data)
                if found is not None:
                    return found
            item.error = describe_error(e)
            for ext in self.extensions:
                if ext.name not in item.extras:
                    _keep(item, ext, ext.prepare_failed(FileSource(path, data)))
        return item

    def _video_by_content(self, index: int, path: str, data: bytes | None) -> PreparedItem | None:
        """A file that no image decoder reads, read as a video when PyAV decodes a frame of
        it (a camera's .MPG, a video under another extension); None when it cannot."""
        item = self._prepare_video(PreparedItem(index, {}, {}, None, ""), path, data, True)
        return None if item.error else item

    def _prepare_video(
        self, item: PreparedItem, path: str, data: bytes | None, by_content: bool = False
    ) -> PreparedItem:
        """A video's sampled frames, each through every transform (stacked: [frames, ...]);
        frames are decoded one at a time. Videos skip the feature cache and --decode gpu."""
        wanted = sorted({cfg.key for cfg in self.needs.values()})
        stacks: dict[str, list[torch.Tensor]] = {key: [] for key in wanted}
        times, size = [], None
        start = time.perf_counter()
        try:
            with open_video(path, data, self.video, container=by_content) as reader:
                if reader.still:  # --animated video, and an image that is not animated
                    return self._prepare_image(item, path, reader.data)
                for frame in reader.frames():
                    image = frame.image
                    size = size or image.size
                    if self.perturbation is not None:
                        image = self.perturbation(image, item.index).image
                    for key in wanted:
                        stacks[key].append(self.transforms[key](image))
                    times.append(frame.time)
                if not times:
                    raise VideoLoadError(f"no frame could be decoded: {path}")
                source = VideoSource(path, reader.data, reader.header.tags, size)
                for ext in self.extensions:
                    _keep(item, ext, ext.prepare_video(source))
            item.tensors = {key: torch.stack(frames) for key, frames in stacks.items()}
            item.video = VideoSample(tuple(times), reader.header.duration)
            if self.timed:
                item.timings = {"read+decode+preprocess": time.perf_counter() - start}
        except Exception as e:  # one bad video must not stop the batch
            item.error = describe_error(e)
            item.tensors, item.video = {}, None
        return item


def _digest(path: str) -> str:
    """The sha256 of a local file; a missing one is worded as the decoder words it."""
    try:
        return sha256_of(path)
    except FileNotFoundError as e:
        raise ImageLoadError(f"file not found: {path}") from e


def _keep(item: PreparedItem, ext: RowExtension, value) -> None:
    """Record an extension's value for the row (None: it has none)."""
    if value is not None:
        item.extras[ext.name] = value


def _read_or_none(path: str) -> bytes | None:
    """The file's bytes (read once, also for a CPU decoding), or None when it cannot be read
    or is empty: the CPU path then words the error."""
    try:
        return storage.read_bytes(path) or None
    except Exception:  # noqa: BLE001 -- network and store errors of every library
        return None
