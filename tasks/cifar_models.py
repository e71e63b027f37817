"""CIFAR image-classification networks of the AdamW and CELGC papers (ResNet-50 for ImageNet: resnet50.py), each with an optional ``bn=False`` that
builds the same network with no BatchNorm module at all.

* CIFAR ResNets (He et al. 2016, section 4.2): 6n+2 layers, widths 16/32/64, parameter-free "option A"
  shortcuts (stride-2 subsampling + zero channel padding), Kaiming-normal init of conv and linear weights;
  convolutions have no bias, with or without BN, as in the authors' code.
* DenseNet-BC (Huang et al. 2017): bottleneck layers (BN-ReLU-1x1 conv to 4k channels, BN-ReLU-3x3 conv to k),
  compression 0.5, three dense blocks, conv weights ~ N(0, 2 / (k_h k_w out_channels)).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

RESNET_DEPTHS = (20, 32, 44, 56, 110, 218)


def _norm(channels: int, bn: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if bn else nn.Identity()


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: keep every other pixel and pad the new channels with zeros (no parameters)."""

    def __init__(self, extra_channels: int):
        super().__init__()
        self.extra = extra_channels

    def forward(self, x):
        half = self.extra // 2
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, half, self.extra - half))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, bn: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _norm(planes, bn)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = _norm(planes, bn)
        self.shortcut = ZeroPadShortcut(planes - in_planes) if stride != 1 or in_planes != planes else nn.Identity()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10, bn: bool = True):
        super().__init__()
        if depth not in RESNET_DEPTHS:
            raise ValueError(f"CIFAR ResNet depth must be one of {RESNET_DEPTHS}, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = _norm(16, bn)
        stages, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1, bn))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


class DenseBottleneck(nn.Module):
    def __init__(self, in_planes: int, growth: int, bn: bool):
        super().__init__()
        self.bn1 = _norm(in_planes, bn)
        self.conv1 = nn.Conv2d(in_planes, 4 * growth, 1, bias=False)
        self.bn2 = _norm(4 * growth, bn)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat((x, out), 1)


class Transition(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, bn: bool):
        super().__init__()
        self.bn = _norm(in_planes, bn)
        self.conv = nn.Conv2d(in_planes, out_planes, 1, bias=False)

    def forward(self, x):
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNetBC(nn.Module):
    def __init__(self, depth: int = 100, growth: int = 12, num_classes: int = 100, bn: bool = True,
                 compression: float = 0.5):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"DenseNet-BC depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        planes = 2 * growth
        self.conv1 = nn.Conv2d(3, planes, 3, padding=1, bias=False)
        layers: list[nn.Module] = []
        for block in range(3):
            for _ in range(n):
                layers.append(DenseBottleneck(planes, growth, bn))
                planes += growth
            if block < 2:
                out_planes = int(math.floor(planes * compression))
                layers.append(Transition(planes, out_planes, bn))
                planes = out_planes
        self.features = nn.Sequential(*layers)
        self.bn = _norm(planes, bn)
        self.fc = nn.Linear(planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        out = F.relu(self.bn(self.features(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))
