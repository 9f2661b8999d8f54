"""``--decode gpu``: JPEGs decoded where the model runs, by ``torchvision.io.decode_jpeg`` (nvJPEG
on CUDA, batched; libjpeg-turbo on CPU), and the Clip224 preprocessing (bicubic resize of the
shorter side to 224 with antialiasing, centre crop, normalisation) done on tensors there.

The prepare stage then only reads the file and checks its header (size limits included);
other formats, perturbed runs and unreadable JPEGs take the usual CPU path per image. Not
bit-identical to the PIL path (another IDCT and resampling code): the tests state the
difference.
"""

import io
import warnings

import torch
from PIL import Image

from clipdet.constants import CLIP_INPUT_SIZE, NORMALIZATION
from clipdet.pipeline.images import MAX_IMAGE_PIXELS, ImageLoadError, describe_error

JPEG_MAGIC = b"\xff\xd8\xff"


def encoded_jpeg(data: bytes, path: str) -> torch.Tensor | None:
    """The file's bytes as a uint8 tensor when it is a JPEG of acceptable size (None for
    other formats: they are decoded on the CPU)."""
    if not data.startswith(JPEG_MAGIC):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:  # reads the header only
                width, height, mode = image.width, image.height, image.mode
    except (OSError, ValueError, Image.DecompressionBombError):
        return None  # the CPU path gives the precise error
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageLoadError(
            f"image too large ({width}x{height} pixels, limit {MAX_IMAGE_PIXELS}; possible "
            f"decompression bomb): {path}"
        )
    if mode not in ("RGB", "L"):  # CMYK and friends: Pillow's conversion, as the reference
        return None
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def clip224(image: torch.Tensor, norm_type: str) -> torch.Tensor:
    """[3, H, W] uint8 -> the Clip224 input [3, 224, 224] float, normalised."""
    from torchvision.transforms.v2 import functional as F

    image = F.resize(
        image, [CLIP_INPUT_SIZE], interpolation=F.InterpolationMode.BICUBIC, antialias=True
    )
    image = F.center_crop(image, [CLIP_INPUT_SIZE, CLIP_INPUT_SIZE])
    mean, std = NORMALIZATION[norm_type]
    return F.normalize(image.float() / 255, mean=list(mean), std=list(std))


def decode_items(items, device: torch.device) -> None:
    """Decode the encoded JPEGs of ``items`` on ``device`` (one batched call, image by image
    if it fails) and fill their tensors for every wanted Clip224 transform; a JPEG that does
    not decode becomes the item's error."""
    from torchvision.io import ImageReadMode, decode_jpeg

    todo = [item for item in items if item.encoded is not None and not item.error]
    if not todo:
        return
    try:
        images = decode_jpeg([item.encoded for item in todo], mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        images = []
        for item in todo:
            try:
                images.append(decode_jpeg(item.encoded, mode=ImageReadMode.RGB, device=device))
            except RuntimeError as e:
                images.append(e)
    for item, image in zip(todo, images, strict=True):
        if isinstance(image, Exception):
            item.error = f"ImageLoadError: cannot decode image ({describe_error(image)})"
        else:
            item.tensors = {cfg.key: clip224(image, cfg.norm_type) for cfg in item.wanted}
        item.encoded = None
