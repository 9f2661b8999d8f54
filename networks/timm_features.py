"""A timm model (DINOv2, DINOv3, PE, SigLIP ... ViTs) as a frozen feature extractor: ``embed``
is timm's pre-logits image embedding, ``forward_head(forward_features(x), pre_logits=True)``;
block K is the class token of that block (the mean of the patch tokens without one), through
timm's ``forward_intermediates``. Finding and downloading weights is the library's work
(clipdet.models.backbones).
"""

import timm
import torch
from torch import nn

from .frozen_features import EMBED, FrozenFeatures, block_token


class TimmFeatures(FrozenFeatures):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.embed_width = int(getattr(model, "head_hidden_size", None) or model.num_features)
        if hasattr(model, "blocks") and hasattr(model, "forward_intermediates"):
            self.num_blocks = len(model.blocks)
            self.block_width = int(getattr(model, "embed_dim", None) or model.num_features)
        self.has_class_token = getattr(model, "cls_token", None) is not None

    def describe(self) -> str:
        return f"timm's {type(self.model).__name__}"

    def extract(self, x: torch.Tensor, layers) -> dict:
        wanted, blocks, pooled_wanted = self._split(layers)
        found: dict = {}
        final = None
        if blocks:
            kwargs = dict(indices=blocks, return_prefix_tokens=True, norm=False, output_fmt="NLC")
            if pooled_wanted:
                final, intermediates = self.model.forward_intermediates(x, **kwargs)
            else:
                intermediates = self.model.forward_intermediates(
                    x, intermediates_only=True, stop_early=True, **kwargs
                )
            for block, (tokens, prefix) in zip(blocks, intermediates, strict=True):
                found[block] = block_token(tokens, prefix, self.has_class_token)
        elif pooled_wanted:
            final = self.model.forward_features(x)
        if EMBED in wanted:
            found[EMBED] = self.model.forward_head(final, pre_logits=True)
        return found


def timm_features(model_name: str, state: dict[str, torch.Tensor]) -> TimmFeatures:
    """timm model ``model_name`` (``name`` or ``name.tag``: the tag sets its pretrained config,
    hence its preprocessing) built on the CPU and holding ``state`` (its ``state_dict()`` as
    timm saves it)."""
    try:
        model = timm.create_model(model_name, pretrained=False)
    except RuntimeError as e:  # timm: unknown model
        raise ValueError(f"timm has no model {model_name!r}: {e}") from e
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"the weights do not match timm's {model_name}: {e}") from e
    return TimmFeatures(model.eval())
