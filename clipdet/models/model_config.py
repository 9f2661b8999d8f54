"""A model folder's ``config.yaml``, typed (as timm's ``PretrainedCfg``): the keys every model
has as fields, and the keys its family declares for itself read through ``require``."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from clipdet.constants import DETECTION_TASK


@dataclass(frozen=True)
class ModelConfig:
    """``arch`` names the family; ``model_name`` the model (the folder's name when the file
    does not say); ``weights_file`` lies beside the config; ``task`` "detection" or
    "attribution". ``keys`` is the file's whole mapping: the family's own keys (``norm_type``,
    ``patch_size``, ``block``, ``backbone``, ``layer``, ``classes``, ``open_set`` ...)."""

    arch: str
    model_name: str
    weights_file: str = "weights.pth"
    task: str = DETECTION_TASK
    keys: dict = field(default_factory=dict, compare=False)

    @classmethod
    def from_mapping(cls, mapping: Mapping, name: str | None = None) -> "ModelConfig":
        """The config of a YAML mapping (``name``: the model's, when it does not say)."""
        if "arch" not in mapping:
            raise ValueError(f"model {name or '?'!r}: config.yaml lacks 'arch'")
        keys = dict(mapping)
        keys.setdefault("model_name", name or "new model")
        return cls(str(keys["arch"]), str(keys["model_name"]),
                   str(keys.get("weights_file", "weights.pth")),
                   str(keys.get("task", DETECTION_TASK)), keys)  # fmt: skip

    def get(self, key: str, default: Any = None) -> Any:
        """A key the family may leave out."""
        return self.keys.get(key, default)

    def require(self, key: str) -> Any:
        """A key the family needs, with a clear error naming the model when absent."""
        if key not in self.keys:
            raise ValueError(
                f"model {self.model_name!r}: config.yaml lacks {key!r} (arch {self.arch})"
            )
        return self.keys[key]
