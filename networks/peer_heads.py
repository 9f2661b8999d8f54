"""Peers' own heads on frozen CLIP features, laid out as their published checkpoints are (the
module names are the checkpoints' keys), in eval mode (their dropout layers are identities
here: the checkpoints' layer indices keep their places).

- ``RineHead`` (RINE, Koutlis & Papadopoulos, ECCV 2024): the class token at every block's
  ``ln_2`` ([N, blocks * width], ``networks.frozen_features.BLOCK_NORMS``) through a shared
  MLP (``proj1``), a softmax-weighted sum over the blocks (``alpha``), a second MLP
  (``proj2``) and the classifier (``head``): one logit.
- ``ConceptBottleneckHead`` (clip-cues, Willi et al., 2026): the L2-normalised projected image
  embedding's cosine with each concept's text embedding, times the concept's gate
  (``sigmoid(W_concepts x)``), then a linear layer (``W_classifier``): the logit is the sum of
  the concepts' signed contributions plus the bias.
"""

import torch
import torch.nn.functional as F
from torch import nn


def _mlp(first: int, width: int, layers: int, leading_dropout: bool = True) -> nn.Sequential:
    """[Dropout], then ``layers`` x (Linear, ReLU, Dropout); dropouts as identities."""
    modules: list[nn.Module] = [nn.Identity()] if leading_dropout else []
    for i in range(layers):
        modules += [nn.Linear(first if i == 0 else width, width), nn.ReLU(), nn.Identity()]
    return nn.Sequential(*modules)


class RineHead(nn.Module):
    """RINE's trainable part: [N, blocks * width] -> [N, 1] logits (> 0: synthetic)."""

    def __init__(self, blocks: int, width: int, proj_dim: int, nproj: int):
        super().__init__()
        self.blocks, self.width = blocks, width
        self.alpha = nn.Parameter(torch.zeros(1, blocks, proj_dim))
        self.proj1 = _mlp(width, proj_dim, nproj)
        self.proj2 = _mlp(proj_dim, proj_dim, nproj)
        head = _mlp(proj_dim, proj_dim, 2, leading_dropout=False)
        self.head = nn.Sequential(*head, nn.Linear(proj_dim, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        tokens = features.reshape(features.shape[0], self.blocks, self.width)
        g = self.proj1(tokens)
        z = (torch.softmax(self.alpha, dim=1) * g).sum(dim=1)
        return self.head(self.proj2(z))


class ConceptBottleneckHead(nn.Module):
    """clip-cues' concept bottleneck: [N, D] image embeddings -> [N, 1] logits; ``names``: the
    concepts' names, in the checkpoint's order."""

    def __init__(self, width: int, num_concepts: int, names: list[str] | None = None):
        super().__init__()
        # as stored in the checkpoint (normalised when the model was built, not again here)
        self.register_buffer("text_embeddings", torch.zeros(num_concepts, width))
        self.W_concepts = nn.Linear(width, num_concepts)
        self.W_classifier = nn.Linear(num_concepts, 1)
        self.names = list(names) if names is not None else [str(i) for i in range(num_concepts)]

    def masked_similarity(self, features: torch.Tensor) -> torch.Tensor:
        x = F.normalize(features, dim=1)
        gates = torch.sigmoid(self.W_concepts(x))
        return (x @ self.text_embeddings.T) * gates

    def contributions(self, features: torch.Tensor) -> torch.Tensor:
        """[N, concepts]: each concept's signed contribution to the logit (> 0: towards
        synthetic); their sum plus the bias is the logit."""
        return self.masked_similarity(features) * self.W_classifier.weight.view(1, -1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.W_classifier(self.masked_similarity(features))
