"""Image transforms: the reference code's, derived from a model config's `patch_size` and
`norm_type`, and the libraries' own eval transforms for linear probes on their backbones.

Models that share a transform share one entry (`transform_key`), so an image decoded once is
transformed once per distinct preprocessing, not once per model.
"""

import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torchvision import transforms as T

from clipdet.constants import (
    CLIP224,
    CLIP_INPUT_SIZE,
    CLIP_NORM,
    NORMALIZATION,
    OPENAI_DATASET_MEAN,
    OPENAI_DATASET_STD,
)

ImageTransform = Callable[[Image.Image], torch.Tensor]
# `patch_size: FiveCrops504p14`: five 504-px grids of 14-px patches from the whole image (B-Free)
FIVE_CROPS_SPEC = re.compile(r"^FiveCrops(\d+)p(\d+)$")
# `patch_size: Resize440Crop384Bilinear`: the shorter side resized to 440, a centre crop of 384
# (`Resize336Bicubic`: crop = resize), as torchvision's Resize and CenterCrop on the PIL image;
# `Floor`: as Hugging Face's PIL image processors, `Tensor`: as its torchvision ones (ResizeCrop)
RESIZE_CROP_SPEC = re.compile(r"^Resize(\d+)(?:Crop(\d+))?(Bilinear|Bicubic)(Floor|Tensor)?$")


# The kinds of preprocessing (``PreprocessCfg.kind``)
CLIP224_KIND = "clip224"  # bicubic resize of the shorter side to 224, centre crop (the CLIP heads)
CROP = "crop"  # a centre crop of ``size`` pixels, no resize
FULL = "full"  # the whole image at its own size (full-resolution networks)
FIVE_CROPS = "five_crops"  # five ``size``-px grids of ``patch``-px patches (B-Free)
LIBRARY = "library"  # a library's own eval transform (probes), named by a digest of its config
RESIZE_CROP = "resize_crop"  # a peer's resize of the shorter side and centre crop (``name``: spec)


@dataclass(frozen=True)
class PreprocessCfg:
    """A preprocessing, declared (as open_clip's ``PreprocessCfg``): what the pipeline needs to
    know of it (the key under which models share it, the side of the input it makes, whether
    it keeps the whole image, whether the GPU's JPEG path can make it) comes from these
    fields, never from the key's text. ``norm_type``: the normalisation of the reference's
    kinds; ``size`` the input's side (None: the image's own); ``patch`` the five-crop grids'
    patch; ``name`` a library kind's key."""

    kind: str
    norm_type: str | None = None
    size: int | None = None
    patch: int | None = None
    name: str | None = None

    @classmethod
    def reference(cls, patch_size: Any, norm_type: str) -> "PreprocessCfg":
        """The preprocessing of a reference config's ``patch_size`` and ``norm_type``."""
        _check_norm_type(norm_type)
        if patch_size is None:
            return cls(FULL, norm_type)
        if patch_size == CLIP224:
            return cls(CLIP224_KIND, norm_type, CLIP_INPUT_SIZE)
        if isinstance(patch_size, int) and not isinstance(patch_size, bool) and patch_size > 0:
            return cls(CROP, norm_type, patch_size)
        if isinstance(patch_size, str) and (grid := _five_crops(patch_size)):
            return cls(FIVE_CROPS, norm_type, grid[0], grid[1])
        if isinstance(patch_size, str) and (resize := ResizeCrop.parse(patch_size)):
            return cls(RESIZE_CROP, norm_type, resize.crop, name=patch_size)
        raise ValueError(
            f"unsupported patch_size {patch_size!r}; use null (full image), {CLIP224!r}, a "
            "positive integer (centre crop), FiveCrops<size>p<patch> (patch grids) or "
            "Resize<side>[Crop<size>]<Bilinear|Bicubic>[Floor|Tensor] (resize and centre crop)"
        )

    @property
    def key(self) -> str:
        """A hashable name, e.g. ``Clip224_clip`` or ``full_resnet`` (feature caches and
        shared passes are keyed by it)."""
        return {
            FULL: lambda: f"full_{self.norm_type}",
            CLIP224_KIND: lambda: f"{CLIP224}_{self.norm_type}",
            CROP: lambda: f"crop{self.size}_{self.norm_type}",
            FIVE_CROPS: lambda: f"fivecrops{self.size}p{self.patch}_{self.norm_type}",
            RESIZE_CROP: lambda: f"{self.name}_{self.norm_type}",
            LIBRARY: lambda: self.name,
        }[self.kind]()

    @property
    def full_resolution(self) -> bool:
        """The whole image at its own size (such tensors cannot be stacked freely)."""
        return self.kind == FULL

    @property
    def is_clip224(self) -> bool:
        """The CLIP 224-px pipeline, which ``--decode fast`` and ``--decode gpu`` make."""
        return self.kind == CLIP224_KIND


@dataclass(frozen=True)
class Preprocessing:
    """A model's preprocessing: its declared config and the transform made from it. An image
    smaller than the input is upscaled (or padded) to it."""

    cfg: PreprocessCfg
    transform: ImageTransform

    @property
    def key(self) -> str:
        return self.cfg.key

    @property
    def input_size(self) -> int | None:
        """The side in pixels of the input it makes (None: the whole image)."""
        return self.cfg.size


def reference_preprocessing(patch_size: Any, norm_type: str) -> Preprocessing:
    """The reference code's preprocessing of a config's ``patch_size`` and ``norm_type``."""
    cfg = PreprocessCfg.reference(patch_size, norm_type)
    return Preprocessing(cfg, make_transform(patch_size, norm_type))


def library_preprocessing(library: str, config: dict, transform: ImageTransform) -> Preprocessing:
    """A library's eval ``transform`` built from its ``config`` (open_clip's preprocess config,
    timm's data config), keyed by that config. A config that describes the CLIP 224-px
    pipeline (bicubic resize of the shorter side to 224, centre crop, CLIP normalisation) gets
    its key, ``Clip224_clip``: the two transforms give the same tensors (tested), so a probe
    shares the decoding, the tensors and the backbone's pass with the CLIP detectors."""
    size = config.get("size") if library == "open_clip" else tuple(config["input_size"])[-2:]
    size = min(size) if isinstance(size, (tuple, list)) else size
    if _is_clip224(library, config):
        return Preprocessing(PreprocessCfg(CLIP224_KIND, CLIP_NORM, size), transform)
    text = json.dumps({"library": library, **config}, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return Preprocessing(PreprocessCfg(LIBRARY, size=size, name=f"{library}_{digest}"), transform)


def _is_clip224(library: str, config: dict) -> bool:
    def same(a, b) -> bool:
        if a is None or len(a) != len(b):
            return False
        return all(abs(x - y) < 1e-9 for x, y in zip(a, b, strict=True))

    clip_stats = same(config.get("mean"), OPENAI_DATASET_MEAN) and same(
        config.get("std"), OPENAI_DATASET_STD
    )
    if not clip_stats or config.get("interpolation") != "bicubic":
        return False
    if library == "open_clip":
        size = config.get("size")
        size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        return (
            size == (CLIP_INPUT_SIZE, CLIP_INPUT_SIZE)
            and config.get("resize_mode") == "shortest"
            and config.get("mode", "RGB") == "RGB"
        )
    if library == "timm":  # timm resizes the shorter side to floor(size / crop_pct)
        size = tuple(config.get("input_size", ()))[-2:]
        crop_pct = config.get("crop_pct") or 1.0
        return (
            size == (CLIP_INPUT_SIZE, CLIP_INPUT_SIZE)
            and config.get("crop_mode", "center") == "center"
            and math.floor(CLIP_INPUT_SIZE / crop_pct) == CLIP_INPUT_SIZE
        )
    return False


def five_crops_spec(size: int, patch: int) -> str:
    return f"FiveCrops{size}p{patch}"


def transform_key(patch_size: Any, norm_type: str) -> str:
    """The key of a reference preprocessing (``PreprocessCfg.reference(...).key``)."""
    return PreprocessCfg.reference(patch_size, norm_type).key


def _five_crops(spec: str) -> tuple[int, int] | None:
    match = FIVE_CROPS_SPEC.match(spec)
    if match is None:
        return None
    size, patch = int(match[1]), int(match[2])
    if patch < 1 or size < patch or size % patch:
        raise ValueError(f"{spec!r}: the grid size must be a whole number of patches")
    return size, patch


def make_transform(patch_size: Any, norm_type: str) -> ImageTransform:
    """PIL RGB image -> normalised float tensor [3, H, W], as the reference code computes it."""
    transform_key(patch_size, norm_type)  # validates both values
    mean, std = NORMALIZATION[norm_type]
    if isinstance(patch_size, str) and (grid := _five_crops(patch_size)):
        return PatchGridCrops(*grid, mean, std)
    if isinstance(patch_size, str) and (resize := ResizeCrop.parse(patch_size)):
        return T.Compose([resize, T.Normalize(mean=mean, std=std)])
    steps: list[Callable] = []
    if patch_size == CLIP224:
        steps += [
            T.Resize(CLIP_INPUT_SIZE, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop((CLIP_INPUT_SIZE, CLIP_INPUT_SIZE)),
        ]
    elif patch_size is not None:
        steps.append(T.CenterCrop(patch_size))
    steps += [T.ToTensor(), T.Normalize(mean=mean, std=std)]
    return T.Compose(steps)


def _check_norm_type(norm_type: str) -> None:
    if norm_type not in NORMALIZATION:
        valid = ", ".join(NORMALIZATION)
        raise ValueError(f"unknown norm_type {norm_type!r}; valid choices: {valid}")


@dataclass(frozen=True)
class ResizeCrop:
    """A peer's resize and centre crop, PIL image -> float tensor [3, crop, crop] in [0, 1]:
    the shorter side resized to ``side`` (the longer one to ``int(side * long / short)``,
    truncated, as torchvision and Hugging Face compute it; a small image is upscaled), then a
    centre crop of ``crop``. ``flavour``:

    - ``""``: torchvision's ``Resize`` and ``CenterCrop`` on the PIL image (PIL's filter; the
      crop offset ``(H - crop) / 2`` rounded half to even);
    - ``"Floor"``: Hugging Face's PIL image processors (PIL's filter; the offset rounded down);
    - ``"Tensor"``: Hugging Face's torchvision image processors (the default from transformers
      5): the uint8 tensor resized by ``torchvision.transforms.v2`` with antialiasing (its
      uint8 kernels round differently from v1's: up to one grey level), the offset rounded
      down.
    """

    side: int
    crop: int
    bicubic: bool
    flavour: str = ""

    @classmethod
    def parse(cls, spec: str) -> "ResizeCrop | None":
        match = RESIZE_CROP_SPEC.match(spec)
        if match is None:
            return None
        side = int(match[1])
        crop = int(match[2]) if match[2] else side
        if not 0 < crop <= side:
            raise ValueError(f"{spec!r}: the crop must be positive and at most the resized side")
        return cls(side, crop, match[3] == "Bicubic", match[4] or "")

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the resize."""
        short, long = min(width, height), max(width, height)
        resized = (self.side, int(self.side * long / short))
        return resized if width <= height else resized[::-1]

    def __call__(self, image: Image.Image) -> torch.Tensor:
        width, height = self.resized_size(*image.size)
        if self.flavour == "Tensor":
            return self._tensor_path(image, width, height)
        if (width, height) != image.size:
            image = image.resize((width, height), Image.BICUBIC if self.bicubic else Image.BILINEAR)
        if self.flavour == "Floor":
            top, left = (height - self.crop) // 2, (width - self.crop) // 2
        else:
            top, left = round((height - self.crop) / 2), round((width - self.crop) / 2)
        return T.functional.to_tensor(image.crop((left, top, left + self.crop, top + self.crop)))

    def _tensor_path(self, image: Image.Image, width: int, height: int) -> torch.Tensor:
        import numpy as np
        from torchvision.transforms.v2 import functional as v2_functional

        pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)
        mode = T.InterpolationMode.BICUBIC if self.bicubic else T.InterpolationMode.BILINEAR
        pixels = v2_functional.resize(pixels, [height, width], interpolation=mode, antialias=True)
        top, left = (height - self.crop) // 2, (width - self.crop) // 2
        crop = pixels[:, top : top + self.crop, left : left + self.crop]
        return crop.to(torch.float32) / 255


class PatchGridCrops:
    """The pixels of the grids a five-crop ViT reads (networks.five_crop_vit), as B-Free's
    reference computes them from the whole image's patch embedding, without resizing: the
    embedding of an H x W image is a (H // patch) x (W // patch) grid (the right and bottom
    remainders are never read); from it, ``size // patch`` square grids: the centre one (its
    offset rounded down), then top-left, bottom-left, bottom-right and top-right. An image
    whose grid is smaller than that on a side has its grid tiled (repeated from the top-left)
    up to the size and then cut to it from the top-left: the five grids are then one, given
    once. Returns the normalised pixels [K, 3, size, size], K = 5 or 1; only those pixels are
    converted, so a 12 MP photo costs five 504-px crops, not a 12 MP tensor."""

    def __init__(self, size: int, patch: int, mean, std):
        self.size, self.patch = size, patch
        self.normalize = T.Compose([T.ToTensor(), T.Normalize(mean=mean, std=std)])

    def __call__(self, image: Image.Image) -> torch.Tensor:
        width, height = image.size
        rows, cols, cells = height // self.patch, width // self.patch, self.size // self.patch
        if rows == 0 or cols == 0:
            raise ValueError(
                f"image of {width}x{height} px is smaller than one {self.patch}-px patch"
            )
        if rows >= cells and cols >= cells:
            corners = [
                ((rows - cells) // 2, (cols - cells) // 2),
                (0, 0),
                (rows - cells, 0),
                (rows - cells, cols - cells),
                (0, cols - cells),
            ]
            return torch.stack([self._crop(image, r, c, self.size, self.size) for r, c in corners])
        kept_h, kept_w = min(rows, cells) * self.patch, min(cols, cells) * self.patch
        region = self._crop(image, 0, 0, kept_h, kept_w)
        tiled = region.repeat(1, math.ceil(self.size / kept_h), math.ceil(self.size / kept_w))
        return tiled[:, : self.size, : self.size].unsqueeze(0)

    def _crop(self, image: Image.Image, row: int, col: int, height: int, width: int):
        top, left = row * self.patch, col * self.patch
        return self.normalize(image.crop((left, top, left + width, top + height)))
