"""The registries of known detectors and CLIP backbones, declared as data in `configs/`."""

from dataclasses import dataclass
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
    weights are downloaded, for models that are not Apache-2.0."""

    name: str
    url: str
    config: dict
    sha256: str = ""
    md5: str = ""
    archive: str | None = None
    licence: str = ""
    description: str = ""

    @property
    def checksum(self) -> str:
        """``sha256:<hex>`` or ``md5:<hex>``, as clipdet.download.fetch takes it."""
        if self.sha256:
            return f"sha256:{self.sha256}"
        if self.md5:
            return f"md5:{self.md5}"
        raise ValueError(f"known detector {self.name!r} declares no sha256 or md5")


@dataclass(frozen=True)
class BackboneSpec:
    """An open_clip image tower: model name plus a pretrained tag or a Hugging Face hub path."""

    name: str
    model: str
    pretrained: str | None = None
    hf_hub: str | None = None


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
def _declared_backbones() -> dict[str, BackboneSpec]:
    return {
        name: BackboneSpec(name=name, **entry)
        for name, entry in _read_yaml("backbones.yaml").items()
    }


def known_backbones() -> dict[str, BackboneSpec]:
    return {**_declared_backbones(), **_extra_backbones}


def register_backbone(
    name: str, model: str, pretrained: str | None = None, hf_hub: str | None = None
) -> BackboneSpec:
    """Declare a backbone at run time (e.g. a custom open_clip config added with
    ``open_clip.add_model_config``), usable as ``opencliplinearnext_<name>``."""
    spec = BackboneSpec(name=name, model=model, pretrained=pretrained, hf_hub=hf_hub)
    _extra_backbones[name] = spec
    return spec


def get_backbone(name: str) -> BackboneSpec:
    backbones = known_backbones()
    if name not in backbones:
        valid = ", ".join(sorted(backbones))
        raise ValueError(f"unknown CLIP backbone {name!r}; valid choices: {valid}")
    return backbones[name]


@dataclass(frozen=True)
class Registrations:
    """Backbones declared at run time in this process, with the open_clip configs they use
    (for architectures added with ``open_clip.add_model_config``): what a worker process of a
    cluster must declare again to build the same models."""

    backbones: tuple[BackboneSpec, ...]
    openclip_configs: dict


def runtime_registrations() -> Registrations:
    if not _extra_backbones:
        return Registrations((), {})
    import open_clip

    configs = {}
    for spec in _extra_backbones.values():
        config = open_clip.get_model_config(spec.model)
        if config is not None:
            configs[spec.model] = config
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
