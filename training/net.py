"""FootNet: a small fully-convolutional network that draws a heat map of player foot points."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def conv_bn(c_in: int, c_out: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    # Downsampling uses even kernels (4x4, stride 2, padding 1): output cell j then covers
    # input pixels 2j-1..2j+2 and is centred exactly at (j + 0.5) * 2, the grid convention of
    # the heat map. A 3x3 stride-2 conv would centre it half a pixel off per stage, which the
    # network has to learn to undo and, when short of training, does not quite.
    padding = (k - 1) // 2
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride, padding, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SepBlock(nn.Module):
    """Depthwise 3x3 then pointwise 1x1; a residual when the shape allows it."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.dw = conv_bn(c_in, c_in, 4 if stride == 2 else 3, stride, groups=c_in)
        self.pw = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw(self.dw(x))
        return F.relu(y + x if self.residual else y)


class FootNet(nn.Module):
    """Stride-16 encoder with a light top-down path back to stride 4 (the output grid).

    Regular 3x3 convolutions where there are few channels (they are cheap there and ONNX
    Runtime runs them well), depthwise-separable ones deeper down, where context matters.
    """

    stride = 4

    def __init__(self, width: int = 1):
        super().__init__()
        c1, c2, c3, c4 = 16 * width, 32 * width, 64 * width, 96 * width
        self.stem = conv_bn(3, c1, 4, 2)  # /2
        self.s2 = nn.Sequential(conv_bn(c1, c2, 4, 2), SepBlock(c2, c2))  # /4
        self.s3 = nn.Sequential(SepBlock(c2, c3, 2), SepBlock(c3, c3), SepBlock(c3, c3))  # /8
        self.s4 = nn.Sequential(SepBlock(c3, c4, 2), SepBlock(c4, c4), SepBlock(c4, c4))  # /16
        self.lat4 = conv_bn(c4, c2, 1)
        self.lat3 = conv_bn(c3, c2, 1)
        self.lat2 = conv_bn(c2, c2, 1)
        self.head = nn.Sequential(SepBlock(c2, c2), SepBlock(c2, c2), nn.Conv2d(c2, 1, 1))
        # Start near the background rate so early training is not swamped by false peaks.
        nn.init.constant_(self.head[-1].bias, -4.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N, 1, H/4, W/4); the exported model applies the sigmoid."""
        x2 = self.s2(self.stem(images))
        x3 = self.s3(x2)
        x4 = self.s4(x3)
        p3 = self.lat3(x3) + F.interpolate(self.lat4(x4), size=x3.shape[-2:], mode="nearest")
        p2 = self.lat2(x2) + F.interpolate(p3, size=x2.shape[-2:], mode="nearest")
        return self.head(p2)


class ExportedFootNet(nn.Module):
    """The deployed graph: heat map in 0..1."""

    def __init__(self, net: FootNet):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(images))
