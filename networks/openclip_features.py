"""An open_clip image tower (CLIP, SigLIP 2, PE, MetaCLIP ...) as a frozen feature extractor.

Only the image tower is built, on the meta device (no random initialisation), then filled with
the state dict it is given (tensors are assigned, not copied: memory-mapped ones stay mapped).
A tower with buffers that no checkpoint holds (a timm trunk's rotary embeddings) is built on the
CPU instead, so that those are computed. Finding and reading checkpoints is the library's work
(clipdet.models.backbones).
"""

import contextlib
import logging

import open_clip
import torch
from torch import nn

from .frozen_features import BLOCK_NORMS, EMBED, NEXT_TO_LAST, FrozenFeatures, block_token


class OpenClipFeatures(FrozenFeatures):
    """An open_clip image tower, frozen. Its layers: ``embed`` (``encode_image``: the projected
    features), ``next_to_last`` for a ViT with a projection (the pooled features before it:
    1024-d for ViT-L/14, the paper's), and the tokens of every transformer block, all from one
    pass. The projection is held apart from the tower (``pooled @ projection``, as open_clip
    computes it) so that both pooled layers come from that pass. A ViT also gives
    ``block_norms`` (RINE's features: the class token at every block's ``ln_2``), read by
    forward hooks during that pass.
    """

    def __init__(self, visual: nn.Module, embed_dim: int):
        super().__init__()
        self.visual = visual
        self.embed_width = int(embed_dim)
        proj = getattr(visual, "proj", None)
        self.projection = None
        if isinstance(proj, torch.Tensor):
            visual.proj = None
            self.projection = proj if isinstance(proj, nn.Parameter) else nn.Parameter(proj)
            self.named_layers = (EMBED, NEXT_TO_LAST)
        trunk = getattr(visual, "trunk", None)  # a timm tower (PE, SigLIP 2 ...)
        transformer = getattr(visual, "transformer", None)
        if (
            hasattr(transformer, "resblocks")
            and getattr(visual, "class_embedding", None) is not None
        ):
            self.num_blocks, self.block_width = len(transformer.resblocks), int(transformer.width)
            self.has_class_token = True  # open_clip's ViT always has one
            self.named_layers = (*self.named_layers, BLOCK_NORMS)
        elif trunk is not None and hasattr(trunk, "blocks"):
            self.num_blocks, self.block_width = len(trunk.blocks), int(trunk.embed_dim)
            self.has_class_token = getattr(trunk, "cls_token", None) is not None

    def describe(self) -> str:
        return f"the {type(self.visual).__name__} image tower"

    def _named_width(self, layer: str) -> int:
        if layer == BLOCK_NORMS:
            return self.num_blocks * self.block_width
        return int(self.projection.shape[0])  # next_to_last

    def extract(self, x: torch.Tensor, layers) -> dict:
        wanted, blocks, pooled_wanted = self._split(layers)
        found: dict = {}
        pooled = None
        norms = self._hook_block_norms() if BLOCK_NORMS in wanted else None
        try:
            pooled = self._forward(x, blocks, pooled_wanted, found)
        finally:
            if norms is not None:
                tokens, handles = norms
                for handle in handles:
                    handle.remove()
                found[BLOCK_NORMS] = torch.cat(tokens, dim=-1)
        if NEXT_TO_LAST in wanted:
            found[NEXT_TO_LAST] = pooled
        if EMBED in wanted:
            found[EMBED] = pooled if self.projection is None else pooled @ self.projection
        return found

    def _hook_block_norms(self) -> tuple[list, list]:
        """Forward hooks keeping each block's ``ln_2`` class token, in block order."""
        transformer = self.visual.transformer
        batch_first = getattr(transformer, "batch_first", True)
        tokens: list[torch.Tensor] = []

        def keep(module, inputs, output):
            tokens.append(output[:, 0] if batch_first else output[0])

        handles = [block.ln_2.register_forward_hook(keep) for block in transformer.resblocks]
        return tokens, handles

    def _forward(self, x, blocks, pooled_wanted, found) -> torch.Tensor | None:
        """One pass: the blocks' tokens into ``found``; returns the pooled features."""
        pooled = None
        if blocks:
            out = self.visual.forward_intermediates(
                x, indices=blocks, stop_early=not pooled_wanted,
                intermediates_only=not pooled_wanted, output_fmt="NLC", output_extra_tokens=True,
            )  # fmt: skip
            prefixes = out.get("image_intermediates_prefix") or [None] * len(blocks)
            for block, tokens, prefix in zip(
                blocks, out["image_intermediates"], prefixes, strict=True
            ):
                found[block] = block_token(tokens, prefix, self.has_class_token)
            pooled = out.get("image_features")
        elif pooled_wanted:
            pooled = self.visual(x)
        return pooled


def build_visual_tower(model: str, quick_gelu: bool = False) -> nn.Module:
    """The image tower of open_clip model ``model``: parameters on the meta device, or on the
    CPU (randomly initialised) when the tower has buffers that a checkpoint does not hold."""
    config = open_clip.get_model_config(model)
    if config is None:
        raise ValueError(
            f"open_clip has no model config {model!r}; "
            f"valid choices: {', '.join(open_clip.list_models())}"
        )
    # open_clip warns "initialized randomly": on the meta device nothing is initialised at all.
    # pretrained_hf=False: no text-tower download (the text tower is not kept).
    with torch.device("meta"), _quiet_root_warnings():
        clip = open_clip.create_model(
            model, load_weights=False, device="meta", force_quick_gelu=quick_gelu,
            pretrained_hf=False,
        )  # fmt: skip
    visual = clip.visual
    if not _computed_buffers(visual):
        return visual
    from open_clip.model import _build_vision_tower  # what open_clip builds ``visual`` with

    with _quiet_root_warnings():
        return _build_vision_tower(
            config["embed_dim"], config["vision_cfg"], quick_gelu or config.get("quick_gelu", False)
        )


def _computed_buffers(module: nn.Module) -> bool:
    """Whether ``module`` holds buffers that are computed when it is built, not saved in its
    state dict (timm's rotary position embeddings, for one)."""
    return any(m._non_persistent_buffers_set for m in module.modules())


@contextlib.contextmanager
def _quiet_root_warnings():
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def openclip_features(
    model: str, state: dict[str, torch.Tensor], quick_gelu: bool = False
) -> OpenClipFeatures:
    """The feature extractor of open_clip model ``model`` holding ``state`` (the image tower's
    entries, without the ``visual.`` prefix)."""
    visual = build_visual_tower(model, quick_gelu)
    try:
        visual.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        raise ValueError(f"the weights do not match the {model} image tower: {e}") from e
    return OpenClipFeatures(visual.eval(), open_clip.get_model_config(model)["embed_dim"])
