"""Architecture families, registered rather than branched on (as timm's model registry): a
family is one module here that declares how its ``arch`` names look, how it builds the network,
which preprocessing the network reads and how the published checkpoint's keys map onto it.
``create_detector`` finds the family of a config's ``arch`` and calls it; an unknown arch is
answered with the registered patterns.

A new family (e.g. SPAI) is one module with one ``register_family``
call, imported at the bottom of this file, plus an entry in ``configs/detectors.yaml`` for its
published weights.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from networks import Detector


@dataclass
class BuildContext:
    """What a family's ``build`` gets: the model's name, config and weights file (None when a
    network is built to train its head), the shared cache of frozen backbones
    (``factory.BackboneCache``), and the attribution spec of an attribution model (None for a
    detector)."""

    name: str
    config: Any  # a clipdet.models.model_config.ModelConfig
    weights_path: Path | None
    backbone_cache: Any
    attribution: Any = None


@dataclass(frozen=True)
class Family:
    """``parse(arch)`` -> a spec of this family's arch, or None when the name is not its;
    ``build(spec, context)`` -> a ``networks.Detector`` (or ``Attributor``) without its weights;
    ``preprocessing(spec, config, detector)`` -> the ``models.preprocess.Preprocessing`` the
    network reads (the reference's from ``patch_size`` and ``norm_type``, or its library's
    own); ``convert_state_dict`` maps the published checkpoint onto the reference layout
    (``fc.*`` for the head, the rest for the backbone); ``shared_frozen_backbone``: whether its
    heads sit on a shared frozen backbone, so that ``clipdet train`` can fit detection and
    attribution heads on it; ``config_keys``: the keys its configs must hold."""

    name: str
    pattern: str
    parse: Callable[[str], Any]
    build: Callable[[Any, BuildContext], Any]
    preprocessing: Callable[[Any, dict, Any], Any]
    convert_state_dict: Callable[[dict], dict] = lambda state: state  # noqa: E731
    shared_frozen_backbone: bool = False
    config_keys: tuple[str, ...] = ()  # what its configs must hold beyond arch, weights_file


_FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    _FAMILIES[family.name] = family
    return family


def families() -> dict[str, Family]:
    return dict(_FAMILIES)


def find_family(arch: str) -> tuple[Family, Any]:
    """(family, spec) of ``arch``; a clear error listing the registered patterns otherwise."""
    for family in _FAMILIES.values():
        spec = family.parse(arch)
        if spec is not None:
            return family, spec
    valid = ", ".join(family.pattern for family in _FAMILIES.values())
    raise ValueError(f"unknown arch {arch!r}; valid choices: {valid}")


def prefixed(prefix: str) -> Callable[[str], str | None]:
    """A family's ``parse`` for arch names ``<prefix><rest>``: the rest (a backbone's or a
    library model's name), or None."""

    def parse(arch: str) -> str | None:
        rest = arch.removeprefix(prefix)
        return rest if arch.startswith(prefix) and rest else None

    return parse


def frozen_detector(context: BuildContext, backbone: str, layer, **detector_kwargs):
    """A head (``fc``, or a peer's own module as ``head=``) on ``layer`` of the shared frozen
    open_clip ``backbone`` of an arch; ``detector_kwargs`` go to ``networks.Detector``."""
    frozen = context.backbone_cache.get(backbone, layer)
    return Detector(frozen.module, frozen.width, frozen.identity, frozen_backbone=True,
                    layer=frozen.layer, **detector_kwargs)  # fmt: skip


def register_head_family(
    name: str, prefix: str, build: Callable, default_patch_size, convert: Callable
) -> Family:
    """Register a family of peers' heads on a frozen open_clip tower, named
    ``<prefix><backbone>``: its configs give ``norm_type`` and may override the peer's
    ``default_patch_size``; ``convert`` maps the peer's checkpoint onto ``fc.*``."""
    return register_family(
        Family(
            name=name,
            pattern=f"{prefix}<backbone>",
            parse=prefixed(prefix),
            build=build,
            preprocessing=preprocessing_or(default_patch_size),
            convert_state_dict=convert,
            config_keys=("norm_type",),
        )  # fmt: skip
    )


def config_preprocessing(spec, config, detector):
    """The reference's preprocessing, from the config's ``patch_size`` and ``norm_type``."""
    from clipdet.models.preprocess import reference_preprocessing

    return reference_preprocessing(config.require("patch_size"), config.require("norm_type"))


def preprocessing_or(default_patch_size) -> Callable:
    """A family's ``preprocessing``: the config's ``patch_size`` (``default_patch_size`` when
    it has none: the peer's own) and ``norm_type``."""
    from clipdet.models.preprocess import reference_preprocessing

    def preprocessing(spec, config, detector):
        patch_size = config.get("patch_size", default_patch_size)
        return reference_preprocessing(patch_size, config.require("norm_type"))

    return preprocessing


# The families clipdet ships; each module registers itself.
from clipdet.models.families import (  # noqa: E402, F401
    clipcues,
    five_crop_vit,
    openclip,
    probe,
    resnet,
    rine,
    timm_classifier,
    univfd,
)
