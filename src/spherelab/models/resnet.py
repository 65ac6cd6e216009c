"""Pre-activation ResNet-18-SI (blocks 2,2,2,2; widths k,2k,4k,8k) and its affine twin.

Only the JOINT vector of its SI weights is SI: the stem output (and every block's residual sum)
flows un-normalized through the identity shortcuts, so scaling one conv alone changes the input
of the next norm by a non-uniform amount. Scaling all convs by a multiplies every residual
stream by a, and the next BN (or the final BN) removes it. Hence one sphere for the total norm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spherelab.models.heads import ModelSpec, ZooModel, batch_norm, conv3x3, make_head

DEFAULT_WIDTH = 32
BLOCKS_PER_STAGE = (2, 2, 2, 2)


class PreActBlock(nn.Module):
    """BN ReLU Conv3x3 BN ReLU Conv3x3, plus the shortcut: identity, or where the shape
    changes the paper's downsampling shortcut, a BatchNorm and then a 1x1 conv (no bias), on
    the pre-activated input."""

    def __init__(self, in_planes: int, planes: int, stride: int, spec: ModelSpec) -> None:
        super().__init__()
        self.bn1 = batch_norm(in_planes, spec)
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = batch_norm(planes, spec)
        self.conv2 = conv3x3(planes, planes)
        self.shortcut: nn.Sequential | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                batch_norm(in_planes, spec),
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(ZooModel):
    """Stem conv3x3, 4 stages of 2 PreActBlocks (strides 1,2,2,2), BN ReLU, avg-pool, head."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec.fully_si)
        width = spec.width or DEFAULT_WIDTH
        self.stem = conv3x3(spec.in_channels, width)
        blocks, in_planes = [], width
        for stage, n_blocks in enumerate(BLOCKS_PER_STAGE):
            planes = width * 2**stage
            for i in range(n_blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(PreActBlock(in_planes, planes, stride, spec))
                in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.final_bn = batch_norm(in_planes, spec)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = make_head(in_planes, spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.final_bn(self.blocks(self.stem(x))))
        return self.head(self.pool(out))
