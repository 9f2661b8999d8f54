"""CLIP image tower from open_clip, used as a frozen feature extractor.

Only the image tower is built, on the meta device (no random initialisation), then filled with
the state dict it is given (tensors are assigned, not copied: memory-mapped ones stay mapped).
Finding and reading checkpoints is the library's work (clipdet.models.backbones).
"""

import contextlib
import logging

import open_clip
import torch
import torch.nn.functional as F
from torch import nn


class _StopForward(Exception):
    """Raised by a block hook once every requested block has run: the rest is not needed."""


class OpenClipFeatures(nn.Module):
    """L2-normalised image features of an open_clip image tower.

    ``next_to_last=True`` drops the visual projection, giving the pre-projection features
    (1024-d for ViT-L/14) that the paper's detectors use. ``forward_layers`` also returns the
    CLS token of intermediate transformer blocks, from the same pass.
    """

    def __init__(self, visual: nn.Module, next_to_last: bool, normalize: bool = True):
        super().__init__()
        self.visual = visual
        if next_to_last:
            self.num_features = visual.proj.shape[0]
            visual.proj = None
        else:
            self.num_features = visual.output_dim
        self.normalize = normalize

    def forward(self, x: torch.Tensor, normalize: bool | None = None) -> torch.Tensor:
        """The output features, L2-normalised unless ``normalize`` (default: the module's
        setting) says otherwise."""
        features = self.visual(x)
        normalize = self.normalize if normalize is None else normalize
        return F.normalize(features, dim=-1) if normalize else features

    @property
    def num_blocks(self) -> int:
        return len(self._resblocks())

    @property
    def block_width(self) -> int:
        """Width of the CLS token of a transformer block (1024 for ViT-L/14)."""
        return int(self.visual.transformer.width)

    def _resblocks(self) -> nn.ModuleList:
        transformer = getattr(self.visual, "transformer", None)
        blocks = getattr(transformer, "resblocks", None)
        if blocks is None or getattr(self.visual, "class_embedding", None) is None:
            raise ValueError(
                f"{type(self.visual).__name__} has no transformer blocks with a CLS token: "
                "block features need a ViT image tower"
            )
        return blocks

    def layer_width(self, layer: int | None) -> int:
        """Width of a feature layer: the output (None) or a block's CLS token (int)."""
        return self.num_features if layer is None else self.block_width

    def check_block(self, block: int) -> int:
        """``block`` as a non-negative index (negative ones count from the end)."""
        n = self.num_blocks
        if not -n <= block < n:
            raise ValueError(f"block {block} out of range: this ViT has blocks 0..{n - 1}")
        return block % n

    def forward_layers(
        self, x: torch.Tensor, blocks=(), final: bool = True, normalize: bool | None = None
    ) -> tuple[torch.Tensor | None, dict[int, torch.Tensor]]:
        """One pass giving the output features (when ``final``) and the CLS token after each
        transformer block in ``blocks``, all L2-normalised unless ``normalize`` is False.
        Without ``final`` the pass stops after the last requested block."""
        normalize = self.normalize if normalize is None else normalize
        blocks = sorted({self.check_block(b) for b in blocks})
        if not blocks:
            return (self.forward(x, normalize) if final else None), {}
        resblocks = self._resblocks()
        batch_first = getattr(self.visual.transformer, "batch_first", True)
        captured: dict[int, torch.Tensor] = {}

        def capture(block: int):
            def hook(module, args, output):
                tokens = output[0] if isinstance(output, tuple) else output
                cls = tokens[:, 0] if batch_first else tokens[0]
                captured[block] = F.normalize(cls, dim=-1) if normalize else cls
                if not final and block == blocks[-1]:
                    raise _StopForward

            return hook

        handles = [resblocks[b].register_forward_hook(capture(b)) for b in blocks]
        try:  # forward, not __call__: a compiled module (--compile) would not run the hooks
            output = self.forward(x, normalize)
        except _StopForward:
            output = None
        finally:
            for handle in handles:
                handle.remove()
        return output, captured


def build_visual_tower(model: str, quick_gelu: bool = False) -> nn.Module:
    """The image tower of open_clip model ``model``, parameters on the meta device."""
    if open_clip.get_model_config(model) is None:
        raise ValueError(
            f"open_clip has no model config {model!r}; "
            f"valid choices: {', '.join(open_clip.list_models())}"
        )
    # open_clip warns "initialized randomly": on the meta device nothing is initialised at all.
    with torch.device("meta"), _quiet_root_warnings():
        clip = open_clip.create_model(
            model, load_weights=False, device="meta", force_quick_gelu=quick_gelu
        )
    return clip.visual


@contextlib.contextmanager
def _quiet_root_warnings():
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def openclip_features(
    model: str, state: dict[str, torch.Tensor], next_to_last: bool, quick_gelu: bool = False
) -> OpenClipFeatures:
    """The feature extractor of open_clip model ``model`` holding ``state`` (the image tower's
    entries, without the ``visual.`` prefix)."""
    visual = build_visual_tower(model, quick_gelu)
    try:
        visual.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        raise ValueError(f"the weights do not match the {model} image tower: {e}") from e
    return OpenClipFeatures(visual.eval(), next_to_last=next_to_last)
