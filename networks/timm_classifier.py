"""A timm image classifier fine-tuned whole (Community Forensics' ViT-S/16 at 384 px): timm's
model without its head as the backbone (``forward`` gives the pre-logits features: a ViT's
final-norm class token), the head as the detector's ``fc``. Built with random weights on the
CPU, then filled by the detector's state dict."""

import timm
from torch import nn


class TimmClassifier(nn.Module):
    def __init__(self, model: str, **kwargs):
        super().__init__()
        self.model = timm.create_model(model, pretrained=False, num_classes=0, **kwargs)
        self.num_features = int(self.model.num_features)

    def forward(self, x):
        return self.model(x)
