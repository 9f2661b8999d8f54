"""ResNet-50 without down-sampling in its stem (Corvi et al., ICASSP 2023): the first 7x7
convolution and the first max-pool have stride 1, so the network sees every pixel of a
full-resolution image. State-dict keys are torchvision's (`conv1`, `bn1`, `layer1..4`).

Large images are processed in overlapping tiles: each tile carries a margin at least the
receptive-field radius, tile origins are aligned to the output stride, and only the outputs of
a tile's core are pooled, so the pooled features equal those of the whole image (up to float
rounding) while memory is bounded by the tile size.
"""

import math

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

RESNET50_LAYERS = (3, 4, 6, 3)
DEFAULT_TILE = 512  # core tile side in pixels; 0 disables tiling


def receptive_field(model: nn.Module) -> tuple[int, int]:
    """(receptive field, output stride) along the main path: convolutions and pools in order."""
    rf, jump = 1, 1
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.MaxPool2d) and not _in_downsample(model, module):
            k = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
            s = module.stride if isinstance(module.stride, int) else module.stride[0]
            rf += (k - 1) * jump
            jump *= s
    return rf, jump


def _in_downsample(model: nn.Module, target: nn.Module) -> bool:
    return any(
        target is m
        for name, block in model.named_modules()
        if name.endswith("downsample")
        for m in block.modules()
    )


class ResNetNoDownFeatures(ResNet):
    """The convolutional trunk and global average pooling: [N, 3, H, W] -> [N, 2048]."""

    def __init__(self, tile_size: int = DEFAULT_TILE):
        with torch.device("meta"):  # weights always come from a checkpoint: skip random init
            super().__init__(Bottleneck, list(RESNET50_LAYERS))
        self.conv1.stride = (1, 1)
        self.maxpool.stride = 1
        self.num_features = self.fc.in_features
        del self.fc
        rf, self.stride = receptive_field(self)
        # margin >= receptive-field radius, rounded up to the stride so tiles stay aligned
        self.margin = math.ceil((rf // 2 + 1) / self.stride) * self.stride
        self.tile_size = tile_size

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        tile = self.tile_size
        if not tile or h * w <= (tile + 2 * self.margin) ** 2:
            return torch.flatten(self.avgpool(self.trunk(x)), 1)
        return self._tiled(x, tile - tile % self.stride or self.stride)

    def _tiled(self, x: torch.Tensor, tile: int, heads: torch.Tensor | None = None):
        """Pooled features; with ``heads`` ([K, C] weights of linear heads) also the [N, K,
        out_h, out_w] map of ``heads @ features`` at every output location (no bias)."""
        h, w = x.shape[-2:]
        out_h, out_w = _out_size(h, self.stride), _out_size(w, self.stride)
        total = torch.zeros(x.shape[0], self.num_features, dtype=torch.float64, device=x.device)
        maps = None
        if heads is not None:
            maps = torch.zeros(x.shape[0], heads.shape[0], out_h, out_w, device=x.device)
        for y0 in range(0, h, tile):
            for x0 in range(0, w, tile):
                ys, xs = max(0, y0 - self.margin), max(0, x0 - self.margin)
                ye, xe = min(h, y0 + tile + self.margin), min(w, x0 + tile + self.margin)
                features = self.trunk(x[..., ys:ye, xs:xe])
                # output rows/cols whose centre lies in this tile's core
                oy0, oy1 = y0 // self.stride, min(out_h, (y0 + tile) // self.stride)
                ox0, ox1 = x0 // self.stride, min(out_w, (x0 + tile) // self.stride)
                core = features[
                    ...,
                    oy0 - ys // self.stride : oy1 - ys // self.stride,
                    ox0 - xs // self.stride : ox1 - xs // self.stride,
                ]
                total += core.double().sum(dim=(-2, -1))
                if maps is not None:
                    maps[..., oy0:oy1, ox0:ox1] = _apply(heads, core)
        pooled = (total / (out_h * out_w)).to(x.dtype if x.is_floating_point() else torch.float32)
        return pooled if heads is None else (pooled, maps)

    def forward_with_maps(
        self, x: torch.Tensor, heads: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled features [N, C], maps [N, K, h, w]) where map k is linear head k's weights
        ``heads[k]`` applied at every location of the last feature map (at the output stride,
        assembled from the tiles' cores when tiled). Global average pooling is linear, so a
        head's logit is exactly the mean of its map plus its bias: the map shows where in the
        image the score comes from."""
        h, w = x.shape[-2:]
        tile = self.tile_size
        if not tile or h * w <= (tile + 2 * self.margin) ** 2:
            features = self.trunk(x)
            return torch.flatten(self.avgpool(features), 1), _apply(heads, features)
        return self._tiled(x, tile - tile % self.stride or self.stride, heads)


def _apply(heads: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """[K, C] weights at every location of [N, C, h, w] features -> [N, K, h, w] (float32)."""
    return torch.einsum("kc,nchw->nkhw", heads.float(), features.float())


def _out_size(size: int, stride: int) -> int:
    """Output size of the stride-1 stem plus three stride-2 stages (padding 1): ceil halvings."""
    for _ in range(int(math.log2(stride))):
        size = (size - 1) // 2 + 1
    return size
