"""What image generators' own front ends write into their files:

* Stable Diffusion WebUI (AUTOMATIC1111, Forge): a PNG text chunk ``parameters`` (and the same
  text in the EXIF ``UserComment`` of its JPEG and WebP files): the prompt, then a line
  ``Steps: …, Sampler: …, …, Model hash: …, Model: sd_xl_base_1.0, …``;
* ComfyUI: PNG text chunks ``prompt`` (the executed graph, JSON) and ``workflow`` (the editor's
  graph), whose loader nodes name the checkpoint (``ckpt_name``, ``unet_name``);
* EXIF ``Software`` when it names a generator.
"""

import json
import re
from dataclasses import dataclass

# EXIF Software values that name a generator (case-insensitive); camera firmware and editors
# (Adobe Photoshop, GIMP, Lightroom …) name none.
GENERATOR_SOFTWARE = (
    "dall-e", "dall·e", "midjourney", "stable diffusion", "firefly", "imagen", "gemini",
    "chatgpt", "leonardo", "novelai", "ideogram", "flux", "comfyui", "automatic1111",
    "invokeai", "fooocus", "bing image creator", "runway",
)  # fmt: skip
# Video generators a container's encoder / handler tags may name (whole words, any case).
VIDEO_GENERATORS = (
    "sora", "veo", "kling", "hailuo", "minimax", "hunyuanvideo", "hunyuan", "ltx-video",
    "ltxv", "wan2", "wan 2", "cogvideox", "pika", "luma", "dream machine", "runway", "gen-3",
    "gen-4", "seedance", "mochi", "open-sora", "stable video diffusion", "animatediff",
)  # fmt: skip
# The tags a generator could name itself in (not Lavf's muxer version, which every FFmpeg
# tool writes: a detector must not learn it)
VIDEO_TAGS = ("encoder", "handler_name", "software", "creation_tool", "comment", "make")
_WEBUI_SETTINGS = re.compile(r"(?:^|\n)Steps: \d+,")  # the settings line of WebUI parameters
_MODEL_LOADER_INPUTS = ("ckpt_name", "unet_name", "model_name")
_MAX_JSON = 4 * 1024 * 1024


@dataclass(frozen=True)
class Found:
    kind: str  # a1111, comfyui, exif
    value: str  # the model / checkpoint / software named, or what was found
    generator: str = ""  # a generator's name, when the value names one


def video_tag_generator(name: str, value: str) -> str:
    """The generator a video's tag names (the matched name as written), or ""."""
    if name not in VIDEO_TAGS:
        return ""
    for generator in (*VIDEO_GENERATORS, *GENERATOR_SOFTWARE):
        found = re.search(rf"(?<![a-z0-9]){re.escape(generator)}(?![a-z])", value, re.IGNORECASE)
        if found:
            return value[found.start() : found.end()]
    return ""


def webui_parameters(text: str) -> Found | None:
    """WebUI's generation parameters: the model's name when stated."""
    found = _WEBUI_SETTINGS.search(text)
    if found is None:
        return None
    # "Steps: 30, Sampler: Euler a, …, Model: sd_xl_base_1.0, …"
    parts = _split_settings(text[found.start() :].strip())
    fields = dict(part.split(": ", 1) for part in parts if ": " in part)
    model = fields.get("Model", "").strip()
    return Found("a1111", model or "parameters", model or "Stable Diffusion WebUI")


def _split_settings(line: str) -> list[str]:
    """Split ``a: 1, b: "x, y", c: 2`` on the commas outside double quotes."""
    parts, current, quoted = [], [], False
    for char in line.strip():
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return parts


def comfyui_graph(prompt: str | None, workflow: str | None) -> Found | None:
    """The checkpoint a ComfyUI graph loads; ValueError when the JSON cannot be read."""
    if prompt is None and workflow is None:
        return None
    names = []
    for text, reader in ((prompt, _prompt_models), (workflow, _workflow_models)):
        if text is None:
            continue
        if len(text) > _MAX_JSON:
            raise ValueError("ComfyUI graph larger than 4 MB")
        try:
            names += reader(json.loads(text))
        except (json.JSONDecodeError, TypeError, AttributeError, KeyError) as e:
            raise ValueError(f"ComfyUI graph is not readable JSON: {e}") from e
    model = next((_strip_extension(n) for n in names if n), "")
    return Found("comfyui", model or "workflow", model or "ComfyUI")


def _prompt_models(graph) -> list[str]:
    """``{"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": …}}, …}``"""
    found = []
    for node in graph.values():
        inputs = node.get("inputs", {}) if isinstance(node, dict) else {}
        found += [inputs[k] for k in _MODEL_LOADER_INPUTS if isinstance(inputs.get(k), str)]
    return found


def _workflow_models(graph) -> list[str]:
    """``{"nodes": [{"type": "CheckpointLoaderSimple", "widgets_values": ["x.safetensors"]}]}``"""
    found = []
    for node in graph.get("nodes", []):
        if "Loader" in str(node.get("type", "")) and node.get("widgets_values"):
            first = node["widgets_values"][0]
            if isinstance(first, str) and first.endswith((".safetensors", ".ckpt", ".pt")):
                found.append(first)
    return found


def _strip_extension(name: str) -> str:
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    return re.sub(r"\.(safetensors|ckpt|pt|pth|bin|gguf)$", "", name)


def exif_evidence(exif_block: bytes) -> list[Found]:
    """EXIF ``Software`` naming a generator, and WebUI parameters in ``UserComment``."""
    from PIL import Image

    exif = Image.Exif()
    exif.load(exif_block)
    found = []
    software = str(exif.get(0x0131, "")).strip("\x00 ")
    if software and any(name in software.lower() for name in GENERATOR_SOFTWARE):
        found.append(Found("exif", software, software))
    comment = _user_comment(exif.get_ifd(0x8769).get(0x9286))
    webui = webui_parameters(comment) if comment else None
    if webui is not None:
        found.append(webui)
    return found


def _user_comment(value) -> str:
    """EXIF UserComment: an 8-byte character-code prefix, then the text."""
    if isinstance(value, str):
        return value
    if not isinstance(value, bytes) or len(value) < 8:
        return ""
    code, text = value[:8], value[8:]
    if code.startswith(b"UNICODE"):
        for encoding in ("utf-16-be", "utf-16-le"):  # WebUI writes big-endian (piexif)
            decoded = text.decode(encoding, errors="replace")
            if "Steps:" in decoded:
                return decoded
        return text.decode("utf-16-be", errors="replace")
    return text.decode("utf-8", errors="replace")
