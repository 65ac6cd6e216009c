"""Shared pieces of the model zoo: the build spec, the base class, the head and the norm layers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from torch import nn

from spherelab.config import ModelConfig
from spherelab.sphere.recipe import freeze_head

# How a ConvNet reads ``depth``: conv+pool stages, or the paper's --depth (models/convnet.py)
DEPTH_STYLES = ("stages", "paper")


def _check_positive_int(name: str, value: object, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer")


@dataclass(frozen=True, kw_only=True)
class ModelSpec(ModelConfig):
    """Everything a model family needs to build one network: the hyperparameters of a run's
    [model] config (inherited from ModelConfig, declared there once) plus the variant and what
    the data decides (the other kwargs of build_model)."""

    fully_si: bool
    num_classes: int = 10
    in_channels: int = 3
    image_size: int = 32  # pixels per side
    in_features: int | None = None  # vector inputs (MLP); None for images

    def __post_init__(self) -> None:
        for name in ("num_classes", "in_channels", "image_size"):
            _check_positive_int(name, getattr(self, name))
        for name in ("in_features", "width", "depth"):
            _check_positive_int(name, getattr(self, name), optional=True)
        if not isinstance(self.head_norm, (int, float)) or not self.head_norm > 0:
            raise ValueError(f"head_norm={self.head_norm!r} must be a positive number (paper: 10)")
        if self.head_bias not in (None, True, False):
            raise ValueError(f"head_bias={self.head_bias!r} must be true, false or unset")
        if self.depth_style not in DEPTH_STYLES:
            raise ValueError(
                f"depth_style={self.depth_style!r} is unknown; use one of {', '.join(DEPTH_STYLES)}"
            )


class ZooModel(nn.Module):
    """Base class of the built-in models: ``.head``, ``.fully_si``, ``.config``, SI declaration.

    Subclasses create their SI layers first and the head last (``make_head``), so that the SI
    weights drawn from the global RNG are the same for a model and its ``_af`` twin.
    """

    head: nn.Linear

    def __init__(self, fully_si: bool) -> None:
        super().__init__()
        self.fully_si = fully_si
        self.config: dict = {}  # set by build_model: name + kwargs, enough to rebuild

    def si_parameters(self) -> list[nn.Parameter]:
        """Weights of every conv/linear except the head: in the zoo, each one feeds a norm."""
        return [
            cast(nn.Parameter, m.weight)  # torch types a layer's weight as a plain Tensor
            for m in self.modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m is not self.head
        ]


def make_head(in_features: int, spec: ModelSpec) -> nn.Linear:
    """Fully SI: seeded, norm ``spec.head_norm``, frozen, bias-free unless ``head_bias`` is true.
    Twin: trainable, default init from the global RNG, with a bias unless ``head_bias`` is false."""
    if not spec.fully_si:
        return nn.Linear(in_features, spec.num_classes, bias=spec.head_bias is not False)
    head = nn.Linear(in_features, spec.num_classes, bias=False)
    return freeze_head(head, norm=spec.head_norm, seed=spec.head_seed, bias=bool(spec.head_bias))


def batch_norm(features: int, spec: ModelSpec, dims: int = 2) -> nn.Module:
    """BatchNorm without affine parameters for fully SI models, with them for the twins."""
    cls = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
    return cls(features, affine=not spec.fully_si)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias (it would feed a norm)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
