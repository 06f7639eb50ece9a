"""ResNet for 32x32 inputs: 3x3 stride-1 stem, no max-pool, a width multiplier.

Parameter names follow torchvision's ResNet (conv1, bn1, layer1..4), so a torchvision-style
state dict of a CIFAR ResNet loads into it.
"""
from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + idt)


DEPTHS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}


class CifarResNet(nn.Module):
    """Backbone returning the pooled feature: (B, 3, H, W) -> (B, 8 * base_width)."""

    def __init__(self, depth: str = "resnet18", width: float = 1.0):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"unknown CIFAR ResNet depth {depth!r}; known: {', '.join(DEPTHS)}")
        widths = [max(8, int(round(c * width))) for c in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        cin = widths[0]
        for i, (n, cout) in enumerate(zip(DEPTHS[depth], widths)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(cin, cout, stride=2 if (j == 0 and i > 0) else 1))
                cin = cout
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))            # (B, w, 32, 32)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 8w, 4, 4)
        return torch.flatten(self.avgpool(x), 1)          # (B, 8w)
