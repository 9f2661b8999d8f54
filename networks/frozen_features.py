"""Frozen, pretrained feature extractors: one forward pass gives any set of a backbone's feature
layers, so that every head on a backbone (detectors, attribution models, probes at several
layers) shares it.

A feature layer is named:

- ``"embed"``: the library's own image embedding (open_clip ``encode_image``; timm
  ``forward_head(forward_features(x), pre_logits=True)``);
- ``"next_to_last"``: an open_clip ViT's pooled features before its projection (the paper's
  detectors);
- ``"block_norms"``: an open_clip ViT's class token at the output of every block's second
  LayerNorm (``ln_2``, the MLP's input), the blocks' concatenated ([N, blocks * width]; RINE);
- an int K: the class token after transformer block K (the mean of the patch tokens for a
  model without one), read through the library's ``forward_intermediates``.

Features come out raw (not L2-normalised): the heads' owners normalise them.
"""

import torch
from torch import nn

EMBED = "embed"
NEXT_TO_LAST = "next_to_last"
BLOCK_NORMS = "block_norms"

Layer = str | int


def block_token(
    tokens: torch.Tensor, prefix: torch.Tensor | None, has_class_token: bool
) -> torch.Tensor:
    """[N, D] feature of one block's output: its class token when the model has one (the first
    prefix token), else the mean of its patch tokens ``tokens`` [N, L, D]."""
    if has_class_token and prefix is not None and prefix.shape[1] > 0:
        return prefix[:, 0]
    return tokens.mean(dim=1)


class FrozenFeatures(nn.Module):
    """What every frozen backbone offers: ``backbone(x, layers)`` -> {layer: [N, D]} in one
    pass, ``check_layer`` (a layer as a canonical key, or a clear error) and ``layer_width``.
    Subclasses set ``named_layers``, ``num_blocks``, ``block_width`` and ``embed_width``."""

    named_layers: tuple[str, ...] = (EMBED,)
    has_class_token: bool = True  # block features: its class token, else the patch tokens' mean
    num_blocks: int = 0
    block_width: int = 0
    embed_width: int = 0

    def check_layer(self, layer: Layer) -> Layer:
        """``layer`` as this backbone's canonical key: a block index made non-negative
        (negative ones count from the end), or one of ``named_layers``."""
        n = self.num_blocks
        if isinstance(layer, int) and not isinstance(layer, bool):
            if n == 0:
                raise ValueError(
                    f"{self.describe()} has no transformer blocks: block features need a ViT"
                )
            if not -n <= layer < n:
                raise ValueError(f"block {layer} out of range: this ViT has blocks 0..{n - 1}")
            return layer % n
        if layer in self.named_layers:
            return layer
        blocks = f", or a block 0..{n - 1} (negative from the end)" if n else ""
        raise ValueError(
            f"unknown feature layer {layer!r} of {self.describe()}; valid choices: "
            f"{', '.join(self.named_layers)}{blocks}"
        )

    def layer_width(self, layer: Layer) -> int:
        layer = self.check_layer(layer)
        if isinstance(layer, int):
            return self.block_width
        return self.embed_width if layer == EMBED else self._named_width(layer)

    def _named_width(self, layer: str) -> int:
        raise ValueError(f"no width for layer {layer!r}")

    def describe(self) -> str:
        return type(self).__name__

    def extract(self, x: torch.Tensor, layers) -> dict[Layer, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, layers=(EMBED,)) -> dict[Layer, torch.Tensor]:
        """{layer: raw features [N, D]} of ``layers`` (canonical keys) from one pass; called
        as a module, so that a compiled backbone (``--compile``) runs compiled."""
        return self.extract(x, layers)

    def _split(self, layers) -> tuple[set, list[int], bool]:
        """(canonical layers, sorted blocks, whether the pooled output is wanted)."""
        wanted = {self.check_layer(layer) for layer in layers}
        blocks = sorted(layer for layer in wanted if isinstance(layer, int))
        return wanted, blocks, len(blocks) < len(wanted)
