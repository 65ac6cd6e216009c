"""ConvNet-SI of the paper (docs/science.md#the-headline-experiment) at any width and depth, and
its affine twin."""

from __future__ import annotations

import torch
from torch import nn

from spherelab.models.heads import ModelSpec, ZooModel, batch_norm, conv3x3, make_head

DEFAULT_WIDTH = 32
DEFAULT_DEPTH = 3
PAPER_STAGES = 3  # the paper's --depth spreads its convs over three width-doubling stages


def stage_plan(depth: int, style: str) -> list[tuple[int, bool]]:
    """The convs after the first one, as (width multiplier of the output, then a max pool).

    ``stages``: ``depth`` stages, each doubling the width and halving the image. ``paper``: the
    paper's ``--depth``: ``depth`` convs over three stages (the first ``depth % 3`` stages get
    one more); within a stage the last conv doubles the width and pools, the others keep it.
    Both give the same network at depth 3.
    """
    if style == "stages":
        return [(2**i, True) for i in range(1, depth + 1)]
    plan: list[tuple[int, bool]] = []
    multiplier = 1
    for stage in range(PAPER_STAGES):
        convs = depth // PAPER_STAGES + (depth % PAPER_STAGES > stage)
        for i in range(convs):
            last = i == convs - 1
            multiplier *= 2 if last else 1
            plan.append((multiplier, last))
    return plan


class ConvNet(ZooModel):
    """Conv(in->c) BN ReLU, then the convs of ``stage_plan`` (each Conv BN ReLU, and a MaxPool2
    where the width doubles), global max pool, head Linear(c * final multiplier -> classes).

    The global max pool equals the paper's final MaxPool on 32x32 inputs and also fits 28x28
    ones. Every conv weight is SI on its own. The layer indices of ``features`` are those of the
    paper's ``conv_layers``.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec.fully_si)
        width = spec.width or DEFAULT_WIDTH
        depth = spec.depth or DEFAULT_DEPTH
        plan = stage_plan(depth, spec.depth_style)
        pools = sum(pool for _, pool in plan)
        if spec.image_size < 2**pools:
            raise ValueError(
                f"image_size={spec.image_size} is too small for a depth-{depth} ConvNet "
                f"({spec.depth_style} style: {pools} poolings each halve it; needs >= "
                f"{2**pools}); use a smaller depth or larger images"
            )
        layers: list[nn.Module] = [
            conv3x3(spec.in_channels, width),
            batch_norm(width, spec),
            nn.ReLU(),
        ]
        c_in = width
        for multiplier, pool in plan:
            c_out = width * multiplier
            layers += [conv3x3(c_in, c_out), batch_norm(c_out, spec), nn.ReLU()]
            layers += [nn.MaxPool2d(2)] if pool else []
            c_in = c_out
        layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = make_head(c_in, spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
