"""MLP-SI for vector data (e.g. MNIST-1D) and its affine twin."""

from __future__ import annotations

import torch
from torch import nn

from spherelab.models.heads import ModelSpec, ZooModel, batch_norm, make_head

DEFAULT_WIDTH = 256
DEFAULT_DEPTH = 3


class MLP(ZooModel):
    """Flatten, ``depth`` x [Linear(no bias) BatchNorm1d ReLU], head. Each hidden weight is SI.

    Inputs of any shape whose trailing dims hold ``in_features`` numbers (they are flattened).
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec.fully_si)
        if spec.in_features is None:
            raise ValueError(
                "in_features=None: the MLP needs the input size; pass "
                "in_features=<numbers per sample> (e.g. 40 for MNIST-1D)"
            )
        width = spec.width or DEFAULT_WIDTH
        depth = spec.depth or DEFAULT_DEPTH
        layers: list[nn.Module] = [nn.Flatten()]
        features = spec.in_features
        for _ in range(depth):
            layers += [
                nn.Linear(features, width, bias=False),
                batch_norm(width, spec, dims=1),
                nn.ReLU(),
            ]
            features = width
        self.features = nn.Sequential(*layers)
        self.head = make_head(width, spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
