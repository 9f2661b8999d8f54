"""A concept model in the run (clip-cues' concept bottleneck, ``networks.ConceptBottleneckHead``):
the three concepts with the largest absolute contribution to its logit, strongest first, in
one column ``concepts_<model>``: ``name:+0.412;name:-0.305;name:+0.118`` (the signed
contribution in logit units, > 0 pushing towards synthetic). The contributions come from the
features its head reads in the run (a video's: its frames' mean), through the head's own
computation; the LLR is their sum plus the head's bias. With several concept models, the first
one's."""

import numpy as np
import torch

from clipdet.constants import CONCEPTS_PREFIX
from clipdet.pipeline.columns import EXPLANATION, Column
from clipdet.pipeline.extensions.base import RowExtension

TOP_CONCEPTS = 3


def concepts_column(model: str) -> str:
    return f"{CONCEPTS_PREFIX}{model}"


def format_concepts(pairs) -> str:
    """``name:+0.412;name:-0.305`` of [(name, contribution)]."""
    return ";".join(f"{name}:{score:+.3f}" for name, score in pairs)


def parse_concepts(text: str) -> list[tuple[str, float]]:
    """The pairs of a ``concepts_<model>`` cell (empty: none)."""
    if not isinstance(text, str) or not text:
        return []
    pairs = []
    for item in text.split(";"):
        name, _, score = item.rpartition(":")
        pairs.append((name, float(score)))
    return pairs


class ConceptEvidence(RowExtension):
    """Each row's value: [(name, contribution)] of its strongest concepts."""

    name = "concepts"
    reads_embedding = True

    def __init__(self, model: str | None = None, head=None):
        self.embedding_model = model  # the features this model's head reads
        self.head = head

    @classmethod
    def from_options(cls, options, paths=None):
        return None

    @classmethod
    def from_models(cls, models):
        import copy

        for m in models:
            head = getattr(m.detector, "fc", None)
            if hasattr(head, "contributions") and hasattr(head, "names"):
                # its own copy on the CPU, in fp32: it pickles to any engine's workers, and
                # reads the features as the infer stage hands them (numpy, float32)
                return cls(m.name, copy.deepcopy(head).to("cpu", torch.float32).eval())
        return None

    def columns(self) -> tuple[Column, ...]:
        return (Column(concepts_column(self.embedding_model), EXPLANATION),) if self.head else ()

    def fold_embedding(self, value, embedding):
        if embedding is None:
            return None
        head = self.head
        features = torch.as_tensor(np.asarray(embedding, dtype=np.float32))
        with torch.inference_mode():
            contributions = head.contributions(features[None])[0].numpy()
        strongest = np.argsort(-np.abs(contributions), kind="stable")[:TOP_CONCEPTS]
        return [(head.names[i], float(contributions[i])) for i in strongest]

    def table_columns(self, values: dict, n_rows: int, fusion=None) -> dict:
        cells = [""] * n_rows
        for index, pairs in values.items():
            cells[index] = format_concepts(pairs)
        return {concepts_column(self.embedding_model): cells}

    def to_json(self, value) -> list:
        return [[name, float(score)] for name, score in value]

    def from_json(self, stored, n_detectors: int) -> list:
        return [(str(name), float(score)) for name, score in stored]
