"""Provenance evidence: what generators and signers write into an image file, read beside the
pixel detectors (``clipdet score --provenance``).

Each finding is a token ``kind:value`` (kinds ``c2pa``, ``iptc``, ``a1111``, ``comfyui``,
``exif``, ``watermark``), e.g. ``c2pa:trainedAlgorithmicMedia(valid, untrusted; OpenAI)``,
``iptc:trainedAlgorithmicMedia``, ``a1111:sd_xl_base_1.0``, ``comfyui:flux1-dev``,
``watermark:sdxl``; a kind whose data is there but cannot be read gives ``kind:unreadable``.
A row's tokens are joined by ``; ``; the first generator any of them names is the row's
``provenance_generator``. Nothing here changes an LLR.

Metadata is read from the file's bytes (no pixel decoding); the watermark reads the pixels the
detectors decode anyway. Nothing inside a file makes clipdet reach the network or other files.
"""

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clipdet.provenance import generators
from clipdet.provenance.c2pa_manifest import MIME_TYPES, C2paReader
from clipdet.provenance.containers import read_metadata
from clipdet.provenance.tokens import split_tokens  # noqa: F401 -- part of the API
from clipdet.provenance.watermarks import WatermarkTooSmall, find_watermarks
from clipdet.provenance.xmp import read_iptc

logger = logging.getLogger(__name__)

KINDS = ("c2pa", "iptc", "a1111", "comfyui", "exif", "watermark", "container")
UNREADABLE = "unreadable"
AI_SOURCE_TYPES = ("trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia")
VIDEO_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov"}  # where C2PA manifests are read
INSTALL_HINT = "--provenance needs its packages: pip install 'clipdet[provenance]'"


@dataclass
class Provenance:
    tokens: list[str] = field(default_factory=list)
    generator: str = ""

    @property
    def text(self) -> str:
        return "; ".join(self.tokens)

    def add(self, kind: str, value: str, generator: str = "") -> None:
        token = f"{kind}:{value}"
        if token not in self.tokens:
            self.tokens.append(token)
        if generator and not self.generator:
            self.generator = generator


def check_installed() -> None:
    """ImportError naming the install command when an optional package is missing."""
    try:
        import c2pa  # noqa: F401
        import defusedxml  # noqa: F401
        import imwatermark  # noqa: F401
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} ({e})") from e


class ProvenanceReader:
    """Reads every kind of evidence from one file. ``c2pa_trust``: PEM trust anchors (the text
    of ``--c2pa_trust``); ``watermarks``: also decode invisible watermarks. Picklable: decoding
    workers and cluster tasks each make their own C2PA context."""

    def __init__(self, c2pa_trust: str | None = None, watermarks: bool = True):
        check_installed()
        self.c2pa = C2paReader(c2pa_trust)
        self.watermarks = watermarks

    def read(self, data: bytes, rgb: np.ndarray | None = None) -> Provenance:
        """Evidence from a file's ``data`` and its decoded RGB pixels (None: not decoded)."""
        found = Provenance()
        meta = read_metadata(data)
        self._c2pa(data, meta.format, found)
        self._iptc(meta, found)
        self._generator_fields(meta, found)
        if self.watermarks and rgb is not None:
            self._watermarks(data, rgb, found)
        return found

    def read_video(self, path: str, data: bytes | None, tags: dict[str, str]) -> Provenance:
        """Evidence of a video: its C2PA manifest (MP4 and MOV, read from the file where it
        lies, or from ``data``) and the container's and stream's tags that name a generator
        (``tags``: "container:encoder" -> value, as ``video.VideoHeader`` holds them)."""
        found = Provenance()
        mime = MIME_TYPES.get(VIDEO_FORMATS.get(Path(str(path).split("?")[0]).suffix.lower(), ""))
        if mime is not None:
            try:
                if data is not None:
                    finding = self.c2pa.read_stream(io.BytesIO(data), mime)
                else:
                    with open(path, "rb") as stream:
                        finding = self.c2pa.read_stream(stream, mime)
            except Exception as e:  # noqa: BLE001 -- a forged or truncated manifest of any kind
                logger.debug("unreadable C2PA manifest: %s", e)
                found.add("c2pa", UNREADABLE)
            else:
                if finding is not None:
                    found.add("c2pa", finding.token_value, finding.generator)
        for key, value in tags.items():
            name = key.split(":", 1)[-1].lower()
            generator = generators.video_tag_generator(name, value)
            if generator:
                found.add("container", f"{name}={value[:80]}", generator)
        return found

    def _c2pa(self, data: bytes, fmt: str, found: Provenance) -> None:
        try:
            finding = self.c2pa.read(data, fmt)
        except Exception as e:  # noqa: BLE001 -- a forged or truncated manifest of any kind
            logger.debug("unreadable C2PA manifest: %s", e)
            found.add("c2pa", UNREADABLE)
            return
        if finding is not None:
            found.add("c2pa", finding.token_value, finding.generator)

    def _iptc(self, meta, found: Provenance) -> None:
        if "xmp" in meta.oversize:
            found.add("iptc", UNREADABLE)
        for packet in meta.xmp:
            try:
                sources = read_iptc(packet)
            except ValueError as e:
                logger.debug("unreadable XMP: %s", e)
                found.add("iptc", UNREADABLE)
                continue
            for source in sources:
                if source.source_type in AI_SOURCE_TYPES or source.ai_system:
                    value = source.source_type + (
                        f"({source.ai_system})" if source.ai_system else ""
                    )
                    found.add("iptc", value, source.ai_system)

    def _generator_fields(self, meta, found: Provenance) -> None:
        if "parameters" in meta.oversize:
            found.add("a1111", UNREADABLE)
        elif "parameters" in meta.text:
            webui = generators.webui_parameters(meta.text["parameters"])
            if webui is not None:
                found.add(webui.kind, webui.value, webui.generator)
        if {"prompt", "workflow"} & meta.oversize:
            found.add("comfyui", UNREADABLE)
        else:
            try:
                comfy = generators.comfyui_graph(meta.text.get("prompt"), meta.text.get("workflow"))
            except ValueError as e:
                logger.debug("unreadable ComfyUI graph: %s", e)
                found.add("comfyui", UNREADABLE)
            else:
                if comfy is not None:
                    found.add(comfy.kind, comfy.value, comfy.generator)
        if meta.exif:
            try:
                for item in generators.exif_evidence(meta.exif):
                    found.add(item.kind, item.value, item.generator)
            except Exception as e:  # noqa: BLE001 -- Pillow's EXIF parser on hostile bytes
                logger.debug("unreadable EXIF: %s", e)
                found.add("exif", UNREADABLE)

    def _watermarks(self, data: bytes, rgb: np.ndarray, found: Provenance) -> None:
        header = _pixel_format(data)
        if header == "high bit depth":
            found.add("watermark", f"{UNREADABLE}(high bit depth)")
            return
        if header == "lossy":  # measured: JPEG below quality ~97 erases both marks
            return
        try:
            for mark in find_watermarks(rgb):
                found.add("watermark", mark.name, mark.generator)
        except WatermarkTooSmall:
            found.add("watermark", f"{UNREADABLE}(under 256x256 pixels)")
        except Exception as e:  # noqa: BLE001 -- the decoder on odd shapes
            logger.debug("watermark decoder failed: %s", e)
            found.add("watermark", UNREADABLE)


# A JPEG whose luminance quantisation averages above this was compressed below quality ~97:
# such compression was measured to erase the dwtDct marks (docs/provenance.md), so its pixels
# are not searched (the search costs ~0.2 s per megapixel).
MAX_MARKED_JPEG_QUANT = 3.5


def _pixel_format(data: bytes) -> str:
    """ "high bit depth" (16-bit or float pixels: the 8-bit decoder would read converted
    values), "lossy" (a JPEG compressed too much to keep a watermark) or "" (search it)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.mode.startswith(("I", "F")) or image.mode.endswith(";16"):
                return "high bit depth"
            tables = getattr(image, "quantization", None) or {}
            if image.format == "JPEG" and tables:
                return "lossy" if np.mean(tables[min(tables)]) > MAX_MARKED_JPEG_QUANT else ""
    except Exception:  # noqa: BLE001 -- decoding errors are reported by the pixel path
        return ""
    return ""
