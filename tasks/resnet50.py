"""ResNet-50 for ImageNet: torchvision's model, with every BatchNorm swapped for an identity when ``bn=False``
(the AdamW paper's no-BN setting, carried over)."""
from __future__ import annotations

import torch.nn as nn


def resnet50(num_classes: int = 1000, bn: bool = True) -> nn.Module:
    from torchvision.models import resnet50 as tv_resnet50

    return tv_resnet50(weights=None, num_classes=num_classes, norm_layer=None if bn else (lambda c: nn.Identity()))
