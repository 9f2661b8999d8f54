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
from clipdet.pipeline.feature_cache import FeatureCache
from clipdet.pipeline.gpu_decode import encoded_jpeg
from clipdet.pipeline.images import (
    ImageLoadError,
    describe_error,
    image_facts,
    load_rgb,
    read_image_bytes,
)
from clipdet.pipeline.video import FrameSampling, VideoLoadError, VideoSample, open_video

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
    wanted: tuple[str, ...] = ()  # the transforms the infer stage applies to ``encoded``
    provenance: tuple[str, str] | None = None  # --provenance: (tokens, generator)
    facts: tuple[float, float, float] | None = None  # --calibration: width, height, quality
    video: VideoSample | None = None  # a video: its frames' times (tensors are [frames, ...])

    def pin_memory(self) -> "PreparedItem":
        """Called by the DataLoader (pin_memory=True on CUDA) for fast non-blocking copies."""
        self.tensors = {key: t.pin_memory() for key, t in self.tensors.items()}
        return self


@dataclass(frozen=True)
class CachedGroup:
    """What prepare needs to know of a cacheable feature group."""

    key: str
    transform_key: str
    namespace: str
    width: int


class Preparer:
    """Decode, perturb and preprocess one image for every transform that a model still needs.

    ``transforms``: transform key -> callable PIL image -> tensor; ``needs``: the transform
    key of every feature group; ``cached``: the cacheable groups (with ``cache``);
    ``perturbation``: called as ``perturbation(image, row_index)`` before preprocessing."""

    def __init__(
        self,
        transforms: dict,
        needs: dict[str, str],
        cached: tuple[CachedGroup, ...] = (),
        cache: FeatureCache | None = None,
        perturbation=None,
    ):
        self.transforms = transforms
        self.needs = needs  # group key -> transform key
        self.cached_groups = cached if cache is not None else ()
        self.cache = cache
        self.perturbation = perturbation
        self.timed = False  # record read+decode and preprocess seconds in each item
        self.min_side = None  # --decode fast: JPEGs decoded at a reduced scale (load_rgb)
        self.encode = False  # --decode gpu: JPEGs left encoded for the infer stage
        self.provenance = None  # --provenance: a clipdet.provenance.ProvenanceReader
        self.inspect = False  # --calibration: each image's size and JPEG quality (its header)
        # which files are videos and which of their frames are scored; None: videos are refused
        # undecoded (training and sweeps take images)
        self.video: FrameSampling | None = None

    def __call__(self, index: int, path: str, data: bytes | None = None) -> PreparedItem:
        """``data``: the image's bytes when the caller has them (a tar member), else read
        from ``path`` (once, for the digest, the evidence, the image facts and the decoding
        alike)."""
        item = PreparedItem(index, {}, {}, None, "")
        if (self.video or FrameSampling()).is_video(path):
            if self.video is None:
                item.error = VIDEO_REFUSED
                return item
            return self._prepare_video(item, path, data)
        return self._prepare_image(item, path, data)

    def _prepare_image(self, item: PreparedItem, path: str, data: bytes | None) -> PreparedItem:
        index = item.index
        try:
            if (self.provenance is not None or self.inspect) and data is None:
                data = read_image_bytes(path)
            if self.inspect:
                item.facts = image_facts(data)
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
                    item.wanted = tuple(sorted(wanted))
                    return item
            if wanted or self.provenance is not None:
                start = time.perf_counter()
                image = load_rgb(path, data, self.min_side)
                decoded = time.perf_counter()
                if self.provenance is not None:  # the same pixels, before any perturbation
                    found = self.provenance.read(data, np.asarray(image))
                    item.provenance = (found.text, found.generator)
                if self.perturbation is not None:
                    image = self.perturbation(image, index).image
                item.tensors = {key: self.transforms[key](image) for key in wanted}
                if self.timed:
                    item.timings = {
                        "read+decode": decoded - start,
                        "preprocess": time.perf_counter() - decoded,
                    }
        except Exception as e:  # one bad file must not stop the batch
            item.error = describe_error(e)
            if self.provenance is not None and data is not None and item.provenance is None:
                item.provenance = _metadata_only(self.provenance, data)
        return item

    def _prepare_video(self, item: PreparedItem, path: str, data: bytes | None) -> PreparedItem:
        """A video's sampled frames, each through every transform (stacked: [frames, ...]);
        frames are decoded one at a time. Videos skip the feature cache and --decode gpu."""
        wanted = sorted(set(self.needs.values()))
        stacks: dict[str, list[torch.Tensor]] = {key: [] for key in wanted}
        times, size = [], None
        start = time.perf_counter()
        try:
            with open_video(path, data, self.video) as reader:
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
                if self.provenance is not None:
                    found = self.provenance.read_video(path, reader.data, reader.header.tags)
                    item.provenance = (found.text, found.generator)
            item.tensors = {key: torch.stack(frames) for key, frames in stacks.items()}
            item.video = VideoSample(tuple(times), reader.header.duration_s)
            if self.inspect:
                item.facts = (float(size[0]), float(size[1]), float("nan"))
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


def _metadata_only(reader, data: bytes) -> tuple[str, str] | None:
    """The evidence of a file whose pixels cannot be decoded (its metadata may still say
    which generator made it)."""
    try:
        found = reader.read(data, None)
    except Exception:  # noqa: BLE001 -- the row already carries its error
        return None
    return found.text, found.generator


def _read_or_none(path: str) -> bytes | None:
    """The file's bytes (read once, also for a CPU decoding), or None when it cannot be read
    or is empty: the CPU path then words the error."""
    try:
        return storage.read_bytes(path) or None
    except Exception:  # noqa: BLE001 -- network and store errors of every library
        return None
