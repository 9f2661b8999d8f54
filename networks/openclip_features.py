"""CLIP image tower from open_clip, used as a frozen feature extractor.

Only the image tower is built, on the meta device (no random initialisation), and only its
weights are read from the checkpoint (memory-mapped where the format allows): start-up costs the
time to map the file, not to build and fill a full CLIP.
"""

import contextlib
import logging
import os
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from clipdet.registry import BackboneSpec
from clipdet.weights import WeightsUnavailableError, load_state_dict

logger = logging.getLogger(__name__)

VISUAL_PREFIX = "visual."
# What open_clip looks for in a hub repository, safest first.
HUB_CHECKPOINT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.visual(x)
        return F.normalize(features, dim=-1) if self.normalize else features

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
        self, x: torch.Tensor, blocks=(), final: bool = True
    ) -> tuple[torch.Tensor | None, dict[int, torch.Tensor]]:
        """One pass giving the output features (when ``final``) and the L2-normalised CLS
        token after each transformer block in ``blocks``. Without ``final`` the pass stops
        after the last requested block."""
        blocks = sorted({self.check_block(b) for b in blocks})
        if not blocks:
            return (self(x) if final else None), {}
        resblocks = self._resblocks()
        batch_first = getattr(self.visual.transformer, "batch_first", True)
        captured: dict[int, torch.Tensor] = {}

        def capture(block: int):
            def hook(module, args, output):
                tokens = output[0] if isinstance(output, tuple) else output
                cls = tokens[:, 0] if batch_first else tokens[0]
                captured[block] = F.normalize(cls, dim=-1) if self.normalize else cls
                if not final and block == blocks[-1]:
                    raise _StopForward

            return hook

        handles = [resblocks[b].register_forward_hook(capture(b)) for b in blocks]
        try:  # forward, not __call__: a compiled module (--compile) would not run the hooks
            output = self.forward(x)
        except _StopForward:
            output = None
        finally:
            for handle in handles:
                handle.remove()
        return output, captured


def build_visual_tower(spec: BackboneSpec) -> nn.Module:
    """The image tower of ``spec.model``, parameters on the meta device (not initialised)."""
    if open_clip.get_model_config(spec.model) is None:
        raise ValueError(
            f"open_clip has no model config {spec.model!r} (backbone {spec.name!r}); "
            f"valid choices: {', '.join(open_clip.list_models())}"
        )
    tag_cfg = open_clip.get_pretrained_cfg(spec.model, spec.pretrained) if spec.pretrained else {}
    # open_clip warns "initialized randomly": on the meta device nothing is initialised at all.
    with torch.device("meta"), _quiet_root_warnings():
        model = open_clip.create_model(
            spec.model,
            load_weights=False,
            device="meta",
            force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
        )
    return model.visual


@contextlib.contextmanager
def _quiet_root_warnings():
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def resolve_checkpoint(spec: BackboneSpec, cache_dir: str | None = None) -> Path:
    """Local path of the backbone's open_clip checkpoint, from the hub cache or downloaded."""
    if spec.pretrained:
        cfg = open_clip.get_pretrained_cfg(spec.model, spec.pretrained)
        if not cfg:
            tags = open_clip.list_pretrained_tags_by_model(spec.model)
            raise ValueError(
                f"open_clip has no pretrained tag {spec.pretrained!r} for {spec.model}; "
                f"valid choices: {', '.join(tags)}"
            )
    elif spec.hf_hub:
        cfg = {"hf_hub": spec.hf_hub}
    else:
        raise WeightsUnavailableError(
            f"backbone {spec.name!r} declares no pretrained weights; pass --backbone_weights PATH"
        )
    source = cfg.get("hf_hub") or cfg.get("url")
    cached = _find_in_hub_cache(cfg.get("hf_hub"), cache_dir)
    if cached:
        return cached
    try:
        path = open_clip.download_pretrained(cfg, cache_dir=cache_dir)
    except Exception as e:  # hub and network errors come in many types
        raise WeightsUnavailableError(
            f"could not obtain the {spec.model} ({spec.pretrained or spec.hf_hub}) CLIP weights "
            f"from {source}: {e}. Without network, download open_clip_pytorch_model.bin (or the "
            "open_clip .safetensors) from that Hugging Face repository and pass "
            "--backbone_weights PATH, or place it in the Hugging Face hub cache"
        ) from e
    if not path:
        raise WeightsUnavailableError(f"no download source for backbone {spec.name!r}")
    return Path(path)


def _find_in_hub_cache(hf_hub: str | None, cache_dir: str | None) -> Path | None:
    """A checkpoint already in the Hugging Face cache, found without touching the network (the
    hub client would otherwise spend ~20 s retrying when offline)."""
    if not hf_hub:
        return None
    from huggingface_hub import try_to_load_from_cache

    # open_clip's convention: "org/repo/" means the default file names, "org/repo/file" one file.
    repo_id, filename = os.path.split(hf_hub)
    filenames = [filename] if filename else list(HUB_CHECKPOINT_NAMES)
    for name in filenames:
        found = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
        if isinstance(found, str):
            logger.info("found %s/%s in the Hugging Face cache", repo_id, name)
            return Path(found)
    return None


def load_visual_state_dict(checkpoint: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The image-tower entries of an open_clip checkpoint (a full CLIP or a visual-only one)."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise WeightsUnavailableError(f"backbone checkpoint not found: {checkpoint}")
    if checkpoint.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(checkpoint, framework="pt") as f:
            keys = [k for k in f.keys() if k.startswith(VISUAL_PREFIX)]
            state = {k.removeprefix(VISUAL_PREFIX): f.get_tensor(k) for k in keys}
    else:
        full = load_state_dict(checkpoint, mmap=True)
        state = {
            k.removeprefix(VISUAL_PREFIX): v for k, v in full.items() if k.startswith(VISUAL_PREFIX)
        }
        if not state:  # a checkpoint of the image tower alone
            state = full
    if not state:
        raise ValueError(f"{checkpoint} holds no image-tower weights")
    return state


def create_openclip_features(
    spec: BackboneSpec,
    next_to_last: bool,
    checkpoint: str | os.PathLike | None = None,
    cache_dir: str | None = None,
) -> OpenClipFeatures:
    """Build the feature extractor of ``spec`` with its pretrained (or given) weights, on CPU."""
    visual = build_visual_tower(spec)
    path = Path(checkpoint) if checkpoint else resolve_checkpoint(spec, cache_dir=cache_dir)
    logger.info("loading %s image tower from %s", spec.model, path)
    state = load_visual_state_dict(path)
    try:
        visual.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        raise ValueError(f"{path} does not match the {spec.model} image tower: {e}") from e
    return OpenClipFeatures(visual.eval(), next_to_last=next_to_last)
