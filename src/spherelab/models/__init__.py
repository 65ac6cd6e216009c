"""The model zoo: a registry of fully SI networks and their affine twins, and build_model().

``<family>_si`` is fully scale-invariant (norms without affine parameters, bias-free convs and
linears, frozen seeded head of norm ``head_norm``); ``<family>_af`` is the same architecture with
affine norms and a trainable head with bias, everything trained. Every model exposes ``.head``,
``.fully_si``, ``.si_parameters()`` and ``.config`` (``build_model(**model.config)`` rebuilds it).
``build_from_config`` is the one place a run's [model] config becomes a model.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from spherelab.config import ModelConfig
from spherelab.models.convnet import ConvNet
from spherelab.models.heads import ModelSpec, ZooModel
from spherelab.models.mlp import MLP
from spherelab.models.resnet import PreActResNet18
from spherelab.models.user import build_user_model
from spherelab.runtime import is_import_spec

__all__ = [
    "MLP",
    "ConvNet",
    "PreActResNet18",
    "ZooModel",
    "available_models",
    "build_from_config",
    "build_model",
]

_FAMILIES: dict[str, Callable[[ModelSpec], ZooModel]] = {
    "convnet": ConvNet,
    "resnet18": PreActResNet18,
    "mlp": MLP,
}
_VARIANTS = {"si": True, "af": False}  # suffix -> fully_si


def available_models() -> list[str]:
    """Names accepted by build_model, e.g. 'convnet_si', 'convnet_af'."""
    return [f"{family}_{suffix}" for family in _FAMILIES for suffix in _VARIANTS]


def build_model(
    name: str,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    in_features: int | None = None,
    width: int | None = None,
    depth: int | None = None,
    head_seed: int = 0,
    head_norm: float = 10.0,
    head_bias: bool | None = None,
    depth_style: str = "stages",
) -> nn.Module:
    """Build a model of the zoo. Kwargs a family does not use are ignored (e.g. in_features for
    a ConvNet, depth for ResNet-18); width/depth None means the family's default.

    The SI weights are drawn by PyTorch's default init from the global RNG (seed it first); the
    frozen head of a ``_si`` model comes from its own generator seeded with ``head_seed``.
    ``head_bias`` None keeps the variant's default (``_si``: no bias; ``_af``: a trainable one);
    ``depth_style="paper"`` reads a ConvNet's depth as the paper's ``--depth``.
    """
    family, _, suffix = str(name).rpartition("_")
    if family not in _FAMILIES or suffix not in _VARIANTS:
        raise ValueError(f"unknown model {name!r}; choose one of {available_models()}")
    kwargs: dict[str, Any] = {  # ModelSpec checks each value
        "num_classes": num_classes,
        "in_channels": in_channels,
        "image_size": image_size,
        "in_features": in_features,
        "width": width,
        "depth": depth,
        "head_seed": head_seed,
        "head_norm": head_norm,
        "head_bias": head_bias,
        "depth_style": depth_style,
    }
    model = _FAMILIES[family](ModelSpec(name=name, fully_si=_VARIANTS[suffix], **kwargs))
    model.config = {"name": name, **kwargs}
    return model


def build_from_config(
    model_cfg: ModelConfig,
    input_shape: Sequence[int],
    num_classes: int,
    example: torch.Tensor | None = None,
) -> nn.Module:
    """The model of a run's [model] config, sized for its data: ``input_shape`` is one sample's
    shape ((C, H, W) images feed conv families as channels and square size; every family may
    flatten it to ``in_features``) and ``num_classes`` the head's outputs.

    Every ModelConfig field but ``name`` and ``kwargs`` is passed to build_model as the keyword
    of that name. A ``module:attr`` name builds a user's model (spherelab.models.user), made SI
    and checked on ``example`` (a CPU float32 batch; default: a normal draw of 8 samples).
    """
    if is_import_spec(model_cfg.name):
        if example is None:
            example = torch.randn(8, *input_shape, generator=torch.Generator().manual_seed(0))
        return build_user_model(model_cfg, input_shape, num_classes, example)
    if model_cfg.kwargs:
        raise ValueError(
            f"model.kwargs={model_cfg.kwargs} is for a user factory (model.name=module:attr); "
            f"{model_cfg.name} takes model.width / model.depth"
        )
    shape = tuple(int(n) for n in input_shape)
    sizes: dict[str, Any] = {"num_classes": num_classes, "in_features": math.prod(shape)}
    if len(shape) == 3:  # conv families read these; the MLP flattens images
        sizes.update(in_channels=shape[0], image_size=shape[1])
    hyper = dataclasses.asdict(model_cfg)
    del hyper["kwargs"]
    return build_model(hyper.pop("name"), **hyper, **sizes)
