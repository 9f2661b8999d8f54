"""A timm Vision Transformer that reads fixed grids of patch tokens cut from a whole image, as in
B-Free (Guillaro et al., CVPR 2025): the image is not resized; its patch embedding is read on
five grids of ``input_size`` pixels (centre, then the four corners) and the image's score is the
mean over the grids.

The network takes the grids already cut in pixel space, aligned to the patch size, as a tensor
[N, K, 3, S, S] (K = 5 grids, or 1 when every grid would be the same); since the patch
embedding is a convolution whose stride is its kernel, embedding a grid's pixels equals cutting
that grid out of the whole image's embedding. Which pixels make the grids is the preprocessing's
work (``clipdet.models.preprocess.PatchGridCrops``).

``forward`` returns the mean over the grids of the ViT's pooled (pre-logit) features; the
detector's linear head then gives the mean of the grids' logits.
"""

import torch
from torch import nn


class FiveCropViT(nn.Module):
    def __init__(self, timm_model: str, input_size: int, **timm_kwargs):
        super().__init__()
        import timm

        with torch.device("meta"):  # filled by the state dict: no random initialisation
            vit = timm.create_model(timm_model, pretrained=False, num_classes=0, **timm_kwargs)
            vit.set_input_size(img_size=input_size)
        embed = vit.patch_embed
        if not isinstance(getattr(embed, "proj", None), nn.Conv2d):
            raise ValueError(f"{timm_model} has no convolutional patch embedding")
        if input_size % int(embed.patch_size[0]):
            raise ValueError(f"{timm_model}: {input_size} px is not a whole number of patches")
        self.patch_embed = embed
        vit.patch_embed = nn.Identity()  # the tokens come in already embedded
        self.vit = vit
        self.input_size = input_size
        self.patch_size = int(embed.patch_size[0])
        self.num_features = int(vit.num_features)

    def forward(self, grids: torch.Tensor) -> torch.Tensor:
        if grids.dim() != 5 or grids.shape[-1] != self.input_size:
            raise ValueError(
                f"expected [N, K, 3, {self.input_size}, {self.input_size}] grids, "
                f"got {tuple(grids.shape)}"
            )
        n, k = grids.shape[:2]
        tokens = self.patch_embed.proj(grids.flatten(0, 1))  # [N*K, D, g, g]
        if self.patch_embed.flatten:
            tokens = tokens.flatten(2).transpose(1, 2)  # [N*K, g*g, D]
        tokens = self.patch_embed.norm(tokens)
        features = self.vit(tokens)  # pooled, pre-logit: [N*K, D]
        return features.unflatten(0, (n, k)).mean(dim=1)
