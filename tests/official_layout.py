"""A test reference with microsoft/DynamicHead's published module layout and forward rule.

Written for the tests from the repository's documented structure (detectron2 ``DyConv``): per
block ``offset`` (3x3 conv to 27), ``DyConv`` = [coarser (stride 1), same (stride 1), finer
(stride 2)] each deformable conv with bias + ``bn`` GroupNorm(16), ``AttnConv`` = [avgpool, 1x1
conv to 1, ReLU] then relu6(x+3)/6, and ``relu`` = DyReLU with Linear layers ``fc.0``/``fc.2``.
Like the original, the coarser branch is fed the current level's offset map.
"""
import torch
import torch.nn.functional as F
from mmcv.ops import modulated_deform_conv2d
from torch import nn


class _DeformConvBN(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride = stride
        self.conv = nn.Module()
        self.conv.weight = nn.Parameter(torch.randn(cout, cin, 3, 3) * 0.05)
        self.conv.bias = nn.Parameter(torch.randn(cout) * 0.1)
        self.bn = nn.GroupNorm(16, cout)

    def forward(self, x, offset, mask):
        y = modulated_deform_conv2d(x.contiguous(), offset, mask, self.conv.weight, self.conv.bias,
                                    self.stride, 1, 1, 1, 1)
        return self.bn(y)


class _DyReLU(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.fc = nn.Sequential(nn.Linear(c, c // 4), nn.ReLU(), nn.Linear(c // 4, 4 * c))

    def forward(self, x):
        y = F.relu6(self.fc(x.mean((2, 3))) + 3) / 6
        a1, b1, a2, b2 = y.view(x.shape[0], 4 * self.c, 1, 1).split(self.c, 1)
        a1, a2 = (a1 - 0.5) * 2 + 1.0, (a2 - 0.5) * 2
        b1, b2 = b1 - 0.5, b2 - 0.5
        return torch.max(x * a1 + b1, x * a2 + b2)


class OfficialDyConv(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.DyConv = nn.ModuleList([_DeformConvBN(cin, cout, 1), _DeformConvBN(cin, cout, 1),
                                     _DeformConvBN(cin, cout, 2)])
        self.AttnConv = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cout, 1, 1), nn.ReLU())
        self.relu = _DyReLU(cout)
        self.offset = nn.Conv2d(cin, 27, 3, padding=1)

    def forward(self, feats):
        outs = []
        for level, x in enumerate(feats):
            om = self.offset(x)
            off, mask = om[:, :18], om[:, 18:].sigmoid()
            branch = [self.DyConv[1](x, off, mask)]
            if level > 0:
                branch.append(self.DyConv[2](feats[level - 1], off, mask))
            if level < len(feats) - 1:
                y = self.DyConv[0](feats[level + 1], off, mask)  # reads part of `off`, as upstream
                branch.append(F.interpolate(y, size=x.shape[-2:], mode='bilinear',
                                            align_corners=True))
            attn = [F.relu6(self.AttnConv(b) + 3) / 6 for b in branch]
            outs.append(self.relu(torch.stack([b * a for b, a in zip(branch, attn)]).mean(0)))
        return outs


class OfficialTower(nn.Module):
    """``dyhead_tower`` of num_blocks DyConv blocks."""

    def __init__(self, cin, cout, num_blocks):
        super().__init__()
        self.dyhead_tower = nn.Sequential(*[OfficialDyConv(cin if i == 0 else cout, cout)
                                            for i in range(num_blocks)])

    def forward(self, feats):
        for block in self.dyhead_tower:
            feats = block(feats)
        return feats
