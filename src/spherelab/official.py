"""The paper's four networks as spherelab models: read a state_dict of the paper's public code,
build the equal spherelab model (width, depth, head read from the tensors) and load the weights
strictly (docs/paper_parity.md#networks-and-checkpoints). Its checkpoints become run directories
in spherelab.official_runs.

The official state_dict keys differ from spherelab's only by module names (``conv_layers`` ->
``features``, ``layerS.B`` -> ``blocks.N``, ...); the layer order, shapes and buffers are the
same, so the outputs agree in train and eval mode (tests/test_parity_networks.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from spherelab.models import build_model

# official class name -> (spherelab model name, head weight key in the official state_dict)
NETWORKS = {
    "ConvNetSI": ("convnet_si", "linear_layers.2.weight"),
    "ConvNetSIAf": ("convnet_af", "linear_layers.2.weight"),
    "ResNet18SI": ("resnet18_si", "linear.weight"),
    "ResNet18SIAf": ("resnet18_af", "linear.weight"),
}
RESNET_BLOCKS_PER_STAGE = 2


def _resnet_key(key: str) -> str:
    block = re.match(r"layer(\d)\.(\d)\.", key)
    if block:
        index = (int(block[1]) - 1) * RESNET_BLOCKS_PER_STAGE + int(block[2])
        return f"blocks.{index}.{key[block.end() :]}"
    for old, new in (("conv1.", "stem."), ("bn.", "final_bn."), ("linear.", "head.")):
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def _convnet_key(key: str) -> str:
    for old, new in (("conv_layers.", "features."), ("linear_layers.2.", "head.")):
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def spherelab_state(name: str, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The official ``state_dict`` of network ``name`` under spherelab's keys."""
    rename = _convnet_key if name.startswith("ConvNet") else _resnet_key
    return {rename(key): value for key, value in state_dict.items()}


def official_config(name: str, state_dict: Mapping[str, Tensor]) -> dict[str, Any]:
    """The build_model keywords of the spherelab network equal to the official ``name`` whose
    weights are ``state_dict`` (width, classes, input channels, depth, head bias and norm)."""
    if name not in NETWORKS:
        raise ValueError(f"unknown official network {name!r}; use one of {', '.join(NETWORKS)}")
    model_name, head_key = NETWORKS[name]
    first = "conv_layers.0.weight" if name.startswith("ConvNet") else "conv1.weight"
    missing = [k for k in (first, head_key) if k not in state_dict]
    if missing:
        raise ValueError(
            f"the state_dict has no {missing[0]!r}: it is not one of an official {name}; "
            "pass the --model the checkpoint was trained with"
        )
    head = state_dict[head_key]
    kwargs: dict[str, Any] = {
        "width": int(state_dict[first].shape[0]),
        "in_channels": int(state_dict[first].shape[1]),
        "num_classes": int(head.shape[0]),
        "image_size": 32,  # the paper's final pools fit 32x32 inputs only
        "head_bias": head_key.replace("weight", "bias") in state_dict,
        "head_norm": float(head.double().norm()),
    }
    if name.startswith("ConvNet"):
        convs = [k for k in state_dict if k.startswith("conv_layers.") and k.endswith("weight")]
        convs = [k for k in convs if state_dict[k].dim() == 4]
        kwargs.update(depth=len(convs) - 1, depth_style="paper")
    return {"name": model_name, **kwargs}


def from_official(name: str, state_dict: Mapping[str, Tensor]) -> nn.Module:
    """The spherelab model equal to the paper's network ``name`` (``ConvNetSI``,
    ``ConvNetSIAf``, ``ResNet18SI`` or ``ResNet18SIAf``) holding ``state_dict`` (its width,
    depth and head read from the tensors), loaded strictly, in the state_dict's dtype.

    A ``_si`` model's head stays frozen (the paper trains it at learning rate 0).
    """
    kwargs = official_config(name, state_dict)
    model = build_model(**kwargs)
    dtype = state_dict[next(iter(state_dict))].dtype
    model = model.to(dtype if dtype.is_floating_point else torch.float32)
    try:
        model.load_state_dict(spherelab_state(name, state_dict), strict=True)
    except RuntimeError as err:
        first_line = str(err).splitlines()[0]
        raise ValueError(
            f"the state_dict does not fit an official {name} ({first_line}); pass the --model "
            "the checkpoint was trained with"
        ) from None
    return model
