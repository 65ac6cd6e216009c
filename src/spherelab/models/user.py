"""A user's model in a run: ``model.name = module:attr`` names a factory that builds it.

The factory is called with ``model.kwargs`` (plus ``num_classes``, ``input_shape``,
``in_channels``, ``image_size`` and ``in_features`` from the data, for those of these names that
it accepts and the kwargs do not set). The model is made SI with ``make_scale_invariant`` on an
example batch (unless it declares ``si_parameters()``), checked numerically, and wrapped in
``UserModel``: a module whose forward returns the logits tensor (a ``logits`` key/attribute or
the first tensor of a dict/dataclass output) and that declares its SI weights by name, so
copies and checkpoints keep the declaration.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from spherelab.config import ModelConfig
from spherelab.runtime import import_object
from spherelab.sphere import check_scale_invariance, make_scale_invariant
from spherelab.sphere.calls import select_output

DATA_KWARGS = ("num_classes", "input_shape", "in_channels", "image_size", "in_features")


class UserModel(nn.Module):
    """A user's network (``.net``) that returns logits and declares its SI weights by name."""

    def __init__(self, net: nn.Module, si_names: Sequence[str], spec: str) -> None:
        super().__init__()
        self.net = net
        self.si_names = [f"net.{n}" for n in si_names]
        self.config: dict[str, Any] = {"name": spec}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return select_output(self.net(x))

    def si_parameters(self) -> list[nn.Parameter]:
        return [self.get_parameter(n) for n in self.si_names]


def _data_kwargs(factory: Any, input_shape: tuple[int, ...], num_classes: int) -> dict[str, Any]:
    sizes: dict[str, Any] = {
        "num_classes": num_classes,
        "input_shape": input_shape,
        "in_features": math.prod(input_shape),
    }
    if len(input_shape) == 3:
        sizes.update(in_channels=input_shape[0], image_size=input_shape[1])
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    return {k: v for k, v in sizes.items() if k in params}


def _si_names(net: nn.Module, cfg: ModelConfig, example: torch.Tensor) -> list[str]:
    declared = getattr(net, "si_parameters", None)
    if callable(declared):
        si = list(declared())
    else:
        si = make_scale_invariant(net, example, head_norm=cfg.head_norm, head_seed=cfg.head_seed)
    check = check_scale_invariance(net, example, si, probe_tensors=False)
    if not check.ok:
        bad = ", ".join(check.non_si) or "the joint scaling"
        raise ValueError(
            f"model {cfg.name!r} is not scale-invariant in its declared weights (scaling them "
            f"changes the output by {check.max_rel_change:.3g}; not SI: {bad}); fix its "
            "si_parameters() or drop it so make_scale_invariant decides"
        )
    names = {id(p): n for n, p in net.named_parameters()}
    return [names[id(p)] for p in si]


def build_user_model(
    cfg: ModelConfig, input_shape: Sequence[int], num_classes: int, example: torch.Tensor
) -> UserModel:
    """The model of ``cfg.name = module:attr``, made SI and checked on ``example`` (a batch of
    inputs on the CPU in float32). Raises ValueError with a one-line message naming the fix."""
    factory = import_object(cfg.name, "model")
    shape = tuple(int(n) for n in input_shape)
    kwargs = {**_data_kwargs(factory, shape, num_classes), **cfg.kwargs}
    try:
        net = factory(**kwargs)
    except Exception as err:  # noqa: BLE001 - the user's factory may raise anything
        raise ValueError(
            f"model factory {cfg.name!r} raised {type(err).__name__}: {err} (called with "
            f"{kwargs}); fix the factory or model.kwargs"
        ) from None
    if not isinstance(net, nn.Module):
        raise ValueError(
            f"model factory {cfg.name!r} returned a {type(net).__name__}; it must return a "
            "torch.nn.Module"
        )
    return UserModel(net, _si_names(net, cfg, example), cfg.name)
