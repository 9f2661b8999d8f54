"""The registries of known detectors and backbones, declared as data in `configs/`, and backbone
names: an alias of ``configs/backbones.yaml`` or ``LIB:MODEL[:PRETRAINED]``."""

import os
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

import yaml

_PACKAGE = Path(__file__).resolve().parent.parent
# configs/ of the source tree; an installed clipdet carries it as package data (clipdet/configs).
CONFIGS_DIR = next(
    (d for d in (_PACKAGE / "configs", _PACKAGE.parent / "configs") if d.is_dir()),
    _PACKAGE.parent / "configs",
)


@dataclass(frozen=True)
class KnownDetector:
    """A detector whose official weights clipdet can fetch: the weights file at ``url``
    (verified by ``sha256``), or a zip ``archive`` holding the model folder (verified by
    ``md5`` or ``sha256``, as its publisher states). ``licence`` is shown once, when the
    weights are downloaded, for models that are not Apache-2.0. ``files``: other files the
    model folder needs (name -> ``{url, sha256}``, e.g. a concept vocabulary), fetched and
    verified alike. ``published``: the figures its authors report, for the model table."""

    name: str
    url: str
    config: dict
    sha256: str = ""
    md5: str = ""
    archive: str | None = None
    licence: str = ""
    description: str = ""
    files: dict = field(default_factory=dict)
    published: str = ""

    @property
    def checksum(self) -> str:
        """``sha256:<hex>`` or ``md5:<hex>``, as clipdet.download.fetch takes it."""
        if self.sha256:
            return f"sha256:{self.sha256}"
        if self.md5:
            return f"md5:{self.md5}"
        raise ValueError(f"known detector {self.name!r} declares no sha256 or md5")


OPEN_CLIP = "open_clip"
TIMM = "timm"
LIBRARIES = (OPEN_CLIP, TIMM)
# What a pretrained weights file's name ends with (anything else without a path separator is
# read as the library's pretrained tag).
WEIGHTS_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")


@dataclass(frozen=True)
class BackboneSpec:
    """A pretrained backbone in its library's own terms: ``library`` (open_clip or timm), its
    ``model`` name, and where the weights come from: the library's ``pretrained`` tag, a
    Hugging Face ``hf_hub`` path (open_clip) or a local ``file`` (the model's state dict, as
    the library saves it). ``licence`` is shown once, when the weights are downloaded, for
    backbones that are not under a permissive licence."""

    name: str
    model: str
    pretrained: str | None = None
    hf_hub: str | None = None
    library: str = OPEN_CLIP
    file: str | None = None
    licence: str = ""
    description: str = ""

    @property
    def reference(self) -> str:
        """``LIB:MODEL[:PRETRAINED]``: the backbone in the libraries' own names."""
        source = self.file or self.pretrained or self.hf_hub
        return f"{self.library}:{self.model}" + (f":{source}" if source else "")


_extra_backbones: dict[str, BackboneSpec] = {}


def _read_yaml(filename: str) -> dict:
    with open(CONFIGS_DIR / filename, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


@cache
def known_detectors() -> dict[str, KnownDetector]:
    return {
        name: KnownDetector(name=name, **entry)
        for name, entry in _read_yaml("detectors.yaml").items()
    }


@cache
def declared_backbones() -> dict[str, BackboneSpec]:
    """The aliases of ``configs/backbones.yaml``."""
    return {
        name: BackboneSpec(name=name, **entry)
        for name, entry in _read_yaml("backbones.yaml").items()
    }


def known_backbones() -> dict[str, BackboneSpec]:
    return {**declared_backbones(), **_extra_backbones}


def register_backbone(
    name: str, model: str, pretrained: str | None = None, hf_hub: str | None = None, **fields
) -> BackboneSpec:
    """Declare a backbone alias at run time (e.g. for a custom open_clip config added with
    ``open_clip.add_model_config``), usable as ``opencliplinearnext_<name>`` (open_clip) and
    as ``--backbone <name>``; ``fields``: the other BackboneSpec fields (library, file ...)."""
    spec = BackboneSpec(name=name, model=model, pretrained=pretrained, hf_hub=hf_hub, **fields)
    _extra_backbones[name] = spec
    return spec


def get_backbone(name: str) -> BackboneSpec:
    """The open_clip backbone of an ``opencliplinear*_<name>`` arch."""
    backbones = {n: b for n, b in known_backbones().items() if b.library == OPEN_CLIP}
    if name not in backbones:
        valid = ", ".join(sorted(backbones))
        raise ValueError(f"unknown CLIP backbone {name!r}; valid choices: {valid}")
    return backbones[name]


def parse_backbone(text: str) -> BackboneSpec:
    """A backbone named by an alias of ``configs/backbones.yaml`` (``pe-core-l14-336``) or by
    the library's own names, ``LIB:MODEL[:PRETRAINED]``: ``open_clip:ViT-L-14:openai``,
    ``timm:vit_large_patch16_dinov3:lvd1689m`` (timm's ``MODEL.TAG`` works too), where
    PRETRAINED is the library's pretrained tag or a local weights file."""
    text = str(text).strip()
    known = known_backbones()
    if text in known:
        return known[text]
    library, sep, rest = text.partition(":")
    model, _, pretrained = rest.partition(":")
    if not sep or library not in LIBRARIES or not model:
        raise ValueError(
            f"unknown backbone {text!r}: name it LIB:MODEL[:PRETRAINED] with LIB one of "
            f"{', '.join(LIBRARIES)} (e.g. open_clip:ViT-L-14:openai), or by an alias; valid "
            f"aliases: {', '.join(sorted(known))}"
        )
    if library == TIMM and not pretrained and "." in model:
        model, pretrained = model.split(".", 1)  # timm's own name.tag
    spec = BackboneSpec(name=text, model=model, library=library)
    if not pretrained:
        return spec
    if is_weights_file(pretrained):
        return replace(spec, file=str(Path(pretrained).expanduser().resolve()))
    return replace(spec, pretrained=pretrained)


def is_weights_file(pretrained: str) -> bool:
    """Whether a PRETRAINED value names a local file rather than a library's tag."""
    return (
        os.sep in pretrained
        or "/" in pretrained
        or pretrained.lower().endswith(WEIGHTS_SUFFIXES)
        or Path(pretrained).expanduser().is_file()
    )


@dataclass(frozen=True)
class Registrations:
    """Backbones declared at run time in this process and the open_clip configs added with
    ``open_clip.add_model_config``: what a worker process of a cluster must declare again to
    build the same models."""

    backbones: tuple[BackboneSpec, ...]
    openclip_configs: dict


def runtime_registrations() -> Registrations:
    """The backbones declared with ``register_backbone`` and every open_clip model config
    added at run time (``open_clip.add_model_config``): open_clip's own are left out."""
    import open_clip

    shipped = {p.stem for p in (Path(open_clip.__file__).parent / "model_configs").glob("*.json")}
    configs = {
        model: open_clip.get_model_config(model)
        for model in open_clip.list_models()
        if model not in shipped
    }
    return Registrations(tuple(_extra_backbones.values()), configs)


def replay_registrations(registrations: Registrations, folder: str | Path) -> None:
    """Declare ``registrations`` in this process (open_clip configs written as JSON files
    under ``folder``, as ``open_clip.add_model_config`` reads them)."""
    if registrations.openclip_configs:
        import json

        import open_clip

        known = set(open_clip.list_models())
        for model, config in registrations.openclip_configs.items():
            if model not in known:
                path = Path(folder) / f"{model}.json"
                path.write_text(json.dumps(config), encoding="utf-8")
                open_clip.add_model_config(path)
    for spec in registrations.backbones:
        _extra_backbones[spec.name] = spec


CARD_FILENAME = "card.md"


def model_card(name: str, weights_dir: str | os.PathLike | None = None) -> str | None:
    """A model's card (what it was trained on, the generators it covers, its licence,
    published figures, blind spots): ``<weights_dir>/<name>/card.md`` (a model of your own),
    else the card shipped in ``configs/cards/<name>.md``; None when it has none."""
    places = [Path(weights_dir) / name / CARD_FILENAME] if weights_dir is not None else []
    places.append(CONFIGS_DIR / "cards" / f"{name}.md")
    for place in places:
        if place.is_file():
            return place.read_text(encoding="utf-8")
    return None
