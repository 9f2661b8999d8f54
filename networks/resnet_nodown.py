"""ResNet-50 without down-sampling in its stem (Corvi et al., ICASSP 2023): the first 7x7
convolution and the first max-pool have stride 1, so the network sees every pixel of a
full-resolution image. State-dict keys are torchvision's (`conv1`, `bn1`, `layer1..4`)."""

import torch
from torchvision.models.resnet import Bottleneck, ResNet

RESNET50_LAYERS = (3, 4, 6, 3)


class ResNetNoDownFeatures(ResNet):
    """The convolutional trunk and global average pooling: [N, 3, H, W] -> [N, 2048]."""

    def __init__(self):
        with torch.device("meta"):  # weights always come from a checkpoint: skip random init
            super().__init__(Bottleneck, list(RESNET50_LAYERS))
        self.conv1.stride = (1, 1)
        self.maxpool.stride = 1
        self.num_features = self.fc.in_features
        del self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)
