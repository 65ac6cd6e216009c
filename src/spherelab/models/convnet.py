"""ConvNet-SI of the paper (docs/science.md#the-headline-experiment) at any width and depth, and
its affine twin."""

from __future__ import annotations

import torch
from torch import nn

from spherelab.models.heads import ModelSpec, ZooModel, batch_norm, conv3x3, make_head

DEFAULT_WIDTH = 32
DEFAULT_DEPTH = 3


class ConvNet(ZooModel):
    """Conv(in->c) BN ReLU, then ``depth`` x [Conv(c*2^(i-1) -> c*2^i) BN ReLU MaxPool2],
    global max pool, head Linear(c*2^depth -> classes).

    The global max pool equals the paper's MaxPool4 on 32x32 inputs and also fits 28x28 ones.
    Every conv weight is SI on its own.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec.fully_si)
        width = spec.width or DEFAULT_WIDTH
        depth = spec.depth or DEFAULT_DEPTH
        if spec.image_size < 2**depth:
            raise ValueError(
                f"image_size={spec.image_size} is too small for a depth-{depth} ConvNet (each "
                f"stage halves it; needs >= {2**depth}); use depth <= "
                f"{spec.image_size.bit_length() - 1} or larger images"
            )
        layers: list[nn.Module] = [
            conv3x3(spec.in_channels, width),
            batch_norm(width, spec),
            nn.ReLU(),
        ]
        for i in range(1, depth + 1):
            c_in, c_out = width * 2 ** (i - 1), width * 2**i
            layers += [conv3x3(c_in, c_out), batch_norm(c_out, spec), nn.ReLU(), nn.MaxPool2d(2)]
        layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = make_head(width * 2**depth, spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
