"""``rine_<backbone>``: RINE (Koutlis & Papadopoulos, ECCV 2024; ``mever-team/rine``,
Apache-2.0): the class token at the second LayerNorm of every transformer block of a frozen
CLIP tower (``networks.frozen_features.BLOCK_NORMS``; RINE hooks each block's ``ln_2``), not
normalised, through RINE's head (``networks.RineHead``). Its checkpoints hold only the head
(``alpha``, ``proj1.*``, ``proj2.*``, ``head.*``); the MLPs' depth and width are read from
them. Its preprocessing is its test transform: a centre crop of 224 without resizing
(``patch_size: 224``, zero-padded below 224 as torchvision's ``CenterCrop``), CLIP
normalisation: the same tensors as UnivFD's, so the two share the tower's pass."""

import re

from clipdet.models.families import (
    BuildContext,
    frozen_detector,
    register_head_family,
)
from clipdet.models.weights import load_state_dict
from networks import BLOCK_NORMS, RineHead

PREFIX = "rine_"
RINE_CROP = 224
PROJ_KEY = re.compile(r"^proj1\.(\d+)\.weight$")


def _build(backbone: str, context: BuildContext):
    tower = context.backbone_cache.get(backbone, BLOCK_NORMS).module
    state = load_state_dict(context.weights_path, mmap=True)
    alpha = state.get("alpha")
    layers = sum(1 for key in state if PROJ_KEY.match(key))
    if alpha is None or alpha.ndim != 3 or alpha.shape[1] != tower.num_blocks or not layers:
        raise ValueError(
            f"model {context.name!r}: a RINE checkpoint holds alpha [1, "
            f"{tower.num_blocks}, D] and proj1.*, found {sorted(state)[:5]}"
        )
    head = RineHead(tower.num_blocks, tower.block_width, int(alpha.shape[2]), layers)
    return frozen_detector(context, backbone, BLOCK_NORMS, normalize_features=False, head=head)


register_head_family(
    "rine", PREFIX, _build, RINE_CROP, lambda state: {f"fc.{k}": v for k, v in state.items()}
)
