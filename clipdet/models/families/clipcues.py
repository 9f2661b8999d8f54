"""clip-cues (Willi et al., arXiv 2602.12381; ``marco-willi/clip-cues``, MIT): heads on OpenAI's
CLIP ViT-L/14 at 336 px, computed as its code computes them.

- ``clipcueslinear_<backbone>``: its linear probes. The features are the tower's pooled class
  token before the projection (Hugging Face's ``CLIPVisionModel`` ``pooler_output``: open_clip's
  ``next_to_last``), **not** normalised; the checkpoint's ``model.classification_head.fc.*`` is
  the head. Its preprocessing is torchvision's ``Resize(336)`` (bilinear) and
  ``CenterCrop(336)``: ``patch_size: Resize336Bilinear``.
- ``clipcuesconcepts_<backbone>``: its concept bottleneck (``networks.ConceptBottleneckHead``)
  on the projected embedding (``CLIPVisionModelWithProjection``'s ``image_embeds``: open_clip's
  ``embed``), as its embedding script extracted them with the model's ``AutoProcessor``:
  bicubic resize and centre crop by transformers' torchvision image processor
  (``patch_size: Resize336BicubicTensor``). The checkpoint's ``model.*`` keys are the head's;
  the concepts' names are the ``attribute_name`` column of the CSV named by the config's
  ``concepts_file`` (the vocabulary's rows, in order).
"""

import csv
from pathlib import Path

from clipdet.models.families import (
    BuildContext,
    frozen_detector,
    register_head_family,
)
from clipdet.models.weights import load_state_dict
from networks import EMBED, NEXT_TO_LAST, ConceptBottleneckHead

LINEAR = "clipcueslinear_"
CONCEPTS = "clipcuesconcepts_"
LINEAR_PREPROCESSING = "Resize336Bilinear"
CONCEPTS_PREPROCESSING = "Resize336BicubicTensor"


def _build_linear(backbone: str, context: BuildContext):
    return frozen_detector(context, backbone, NEXT_TO_LAST, normalize_features=False)


def _convert_linear(state: dict) -> dict:
    prefix = "model.classification_head."
    return {
        ("fc." + key.removeprefix(prefix + "fc.") if key.startswith(prefix) else key): value
        for key, value in state.items()
    }


def concept_names(folder: Path, concepts_file: str | None, count: int) -> list[str]:
    """The concepts' names: the ``attribute_name`` column of ``concepts_file`` (beside the
    weights), one per concept of the checkpoint; numbers without a file."""
    if not concepts_file:
        return [f"concept{i}" for i in range(count)]
    path = folder / concepts_file
    try:
        with open(path, newline="", encoding="utf-8") as f:
            names = [row["attribute_name"].strip() for row in csv.DictReader(f)]
    except (OSError, KeyError, UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"cannot read the concepts' names from {path}: {e}") from e
    if len(names) != count:
        raise ValueError(f"{path} names {len(names)} concepts, the checkpoint has {count}")
    return names


def _empty_head(weights_path: Path, concepts_file: str | None, state: dict):
    """The concept bottleneck a checkpoint's (converted) ``state`` fits, named, unfilled."""
    text = state.get("fc.text_embeddings")
    if text is None or text.ndim != 2:
        raise ValueError(
            f"{weights_path}: a concept checkpoint holds model.text_embeddings [concepts, D], "
            f"found {sorted(state)[:5]}"
        )
    count, width = text.shape
    names = concept_names(Path(weights_path).parent, concepts_file, count)
    return ConceptBottleneckHead(width, count, names)


def concept_head(weights_path: Path, concepts_file: str | None) -> ConceptBottleneckHead:
    """The concept bottleneck of a checkpoint, filled, without its backbone."""
    state = _convert_concepts(load_state_dict(weights_path, mmap=True))
    head = _empty_head(weights_path, concepts_file, state)
    try:
        head.load_state_dict({k.removeprefix("fc."): v for k, v in state.items()})
    except RuntimeError as e:
        raise ValueError(f"{weights_path} is not a concept bottleneck's checkpoint: {e}") from e
    return head.eval()


def _build_concepts(backbone: str, context: BuildContext):
    """The network, its head shaped from the checkpoint (memory-mapped: only the shapes are
    read here); the factory then loads the weights into it, once."""
    width = context.backbone_cache.get(backbone, EMBED).width
    state = _convert_concepts(load_state_dict(context.weights_path, mmap=True))
    head = _empty_head(context.weights_path, context.config.get("concepts_file"), state)
    if head.text_embeddings.shape[1] != width:
        raise ValueError(
            f"model {context.name!r}: the checkpoint's text embeddings are "
            f"{head.text_embeddings.shape[1]}-d, the tower's embedding {width}-d"
        )
    return frozen_detector(context, backbone, EMBED, head=head)


def _convert_concepts(state: dict) -> dict:
    return {"fc." + key.removeprefix("model."): value for key, value in state.items()}


register_head_family("clipcues_linear", LINEAR, _build_linear, LINEAR_PREPROCESSING,
                     _convert_linear)  # fmt: skip
register_head_family("clipcues_concepts", CONCEPTS, _build_concepts, CONCEPTS_PREPROCESSING,
                     _convert_concepts)  # fmt: skip
