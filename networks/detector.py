"""A detector is a feature extractor (backbone) and a linear head giving one LLR per image; an
attributor is the same with one logit per class (which generator made the image).

Models that read the same frozen backbone share the module, so the scoring loop runs it once
per image and applies every head to its features.
"""

import torch
import torch.nn.functional as F
from torch import nn


class Detector(nn.Module):
    """``forward_features`` -> [N, D] features; ``forward_head`` -> [N] logits (LLR > 0: fake)."""

    num_outputs = 1

    def __init__(
        self,
        backbone: nn.Module,
        num_features: int,
        backbone_key: str,
        frozen_backbone=False,
        layer: str | int | None = None,
        normalize_features: bool = True,
        head: nn.Module | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        # the head: a linear layer, or a peer's own head module (RINE's MLP, a concept
        # bottleneck) mapping [N, num_features] to [N, num_outputs]
        self.fc = nn.Linear(num_features, self.num_outputs) if head is None else head
        self.backbone_key = backbone_key
        # A frozen backbone is pretrained and shared; this model's weight file holds only `fc`.
        self.frozen_backbone = frozen_backbone
        # A frozen backbone's feature layer (networks.frozen_features: "embed", "next_to_last"
        # or a block index); None for a trainable network, whose output is its features.
        self.layer = layer
        # A frozen backbone's features are L2-normalised unless the head was fitted on raw
        # ones (UnivFD); trainable networks ignore it.
        self.normalize_features = normalize_features

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.layer is None:
            return self.backbone(x)
        features = self.backbone(x, [self.layer])[self.layer]
        return F.normalize(features, dim=-1) if self.normalize_features else features

    def load_reference_state_dict(self, state: dict[str, torch.Tensor]):
        """Load a reference-layout state dict: ``fc.*`` is the head, every other key belongs to
        the backbone. A frozen (pretrained, shared) backbone takes no keys from this file."""
        head = {k.removeprefix("fc."): v for k, v in state.items() if k.startswith("fc.")}
        rest = {k: v for k, v in state.items() if not k.startswith("fc.")}
        if not isinstance(self.fc, nn.Linear):
            _load_assign(self.fc, head)
        elif set(head) != {"weight", "bias"}:
            raise ValueError(f"head weights need fc.weight and fc.bias, found {sorted(state)[:8]}")
        elif head["weight"].shape != self.fc.weight.shape:
            raise ValueError(
                f"fc.weight has shape {tuple(head['weight'].shape)}, the architecture expects "
                f"{tuple(self.fc.weight.shape)} (is the arch right for these weights?)"
            )
        else:
            self.fc.load_state_dict(head)
        if self.frozen_backbone:
            if rest:
                raise ValueError(
                    f"unexpected non-head keys for a frozen backbone: {sorted(rest)[:5]}"
                )
            return
        _load_assign(self.backbone, rest)


class Attributor(Detector):
    """``forward_head`` -> [N, C] logits, one per class of ``classes`` (softmax: posteriors)."""

    def __init__(self, backbone, num_features, backbone_key, classes, layer=None):
        self.num_outputs = len(classes)
        super().__init__(backbone, num_features, backbone_key, frozen_backbone=True, layer=layer)
        self.classes = list(classes)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)


def _load_assign(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load into a module built on the meta device; BatchNorm counters may be absent."""
    expected = module.state_dict(keep_vars=True)
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=value.dtype)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"weights do not match the architecture: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise ValueError(
                f"{key}: shape {tuple(value.shape)} in the file, "
                f"{tuple(expected[key].shape)} expected"
            )
    module.load_state_dict(state, strict=True, assign=True)
