"""Run options, resolved once (command-line value, else default) and passed down whole."""

import os
from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class RunOptions:
    """How a run computes, not what it computes: the same images and models give the same
    LLRs (in fp32) whatever these are, except ``precision``, ``tile_size`` and ``perturb``.

    ``decode`` "fast" decodes JPEGs at a reduced DCT scale when every model reads a 224-px
    input (Clip224), no smaller than twice that; "exact" (the default) decodes them whole,
    bit-compatible with the reference.

    ``provenance`` reads the evidence generators and signers write into the file (C2PA, IPTC,
    generator parameters, invisible watermarks; ``c2pa_trust``: a PEM file of trust anchors)
    into two more columns; LLRs do not change.

    ``calibration`` (a ``clipdet calibrate`` file) records each image's size and JPEG quality
    (read from its header) for the verdict rules; LLRs do not change. ``facts`` writes those
    columns without a calibration (for a later `clipdet calibrate --quality --scores`).
    ``copy_keys`` reads each image's perceptual hash and an embedding sketch, from which
    ``--group auto`` finds the copies of one picture.

    ``views`` (chains of ``perturb``'s operations separated by ``;``) also scores each image as
    those in-memory views of its decoded pixels (``llr@<view>`` columns; a verdict that flips
    under one is inconclusive); LLRs do not change.

    Videos (by extension; animated images too with ``animated`` "video") are scored on
    ``video_frames`` frames spread over their duration, or one every 1/``video_fps`` seconds;
    ``video_timeout`` bounds one video's decoding (seconds).

    ``None`` means "the default for this machine": ``device`` cuda:0 if there is a GPU, else
    cpu; ``batch_size`` 32 on CUDA, 4 on CPU; ``num_workers`` min(4, CPUs); ``tile_size`` the
    network's own (512 for full-resolution ResNets; 0 never tiles)."""

    device: str | None = None
    precision: str = "fp32"
    batch_size: int | None = None
    num_workers: int | None = None
    tile_size: int | None = None
    compile: bool = False
    backbone_weights: str | os.PathLike | None = None
    feature_cache: str | os.PathLike | None = None
    perturb: str | None = None
    perturb_seed: int = 0
    progress: bool = False
    decode: str = "exact"
    provenance: bool = False
    c2pa_trust: str | os.PathLike | None = None
    calibration: str | os.PathLike | None = None
    facts: bool = False
    copy_keys: bool = False
    views: str | None = None
    video_frames: int = 16
    video_fps: float | None = None
    video_timeout: float = 120.0
    animated: str = "image"

    @classmethod
    def from_args(cls, args) -> "RunOptions":
        """The options an argparse namespace holds (attributes of the same names)."""
        names = {f.name for f in fields(cls)}
        given = {k: v for k, v in vars(args).items() if k in names}
        if "quiet" in vars(args):
            given["progress"] = not args.quiet
        return cls(**given)

    def resolved(self) -> "RunOptions":
        """The same options with device, batch size and workers filled in."""
        device = self.device or default_device()
        batch_size = self.batch_size or default_batch_size(device)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        workers = default_num_workers() if self.num_workers is None else self.num_workers
        return replace(self, device=device, batch_size=batch_size, num_workers=workers)


def default_device() -> str:
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


def default_batch_size(device: str) -> int:
    """On CPU small batches let decoding overlap compute (batching gains little there); on a
    GPU large batches keep it busy."""
    return 32 if str(device).startswith("cuda") else 4


def default_num_workers() -> int:
    return min(4, os.cpu_count() or 1)
