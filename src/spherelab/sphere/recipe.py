"""Make a user's model fully scale-invariant in place: the paper's recipe
(docs/science.md#fully-scale-invariant-networks).

Every normalization loses its affine parameters, the convs/linears that feed a norm lose their
bias, and the logit layer is redrawn at a fixed Frobenius norm and frozen (``freeze_head``). Which
weights are SI is decided by the torch.fx graph analysis (``spherelab.sphere.graph``); the public
entry points are importable from ``spherelab.sphere`` and ``spherelab``.
"""

from __future__ import annotations

import logging
import math
from typing import cast

import torch
from torch import nn

from spherelab.sphere.graph import (
    find_si_parameters,
    norm_layers,
    owned_parameters,
    trace,
    weight_layers,
)

logger = logging.getLogger("spherelab")


def freeze_head(
    head: nn.Linear, *, norm: float = 10.0, seed: int = 0, bias: bool = False
) -> nn.Linear:
    """Redraw ``head`` from its own generator, rescale it to Frobenius norm ``norm``, freeze it.

    The draw is PyTorch's default Linear init (weight, then bias) from a ``torch.Generator``
    seeded with ``seed``, so every run of a sweep gets the same head whatever the global seed;
    with ``seed=228`` it is the paper's ``--same_last_layer`` head. The weight is drawn in
    float32 and rescaled there as ``norm * weight / ||weight||`` (this operation order gives the
    paper's head bit for bit). ``bias=False`` removes the bias (the paper's ResNet-SI head);
    ``bias=True`` keeps a frozen one, drawn after the weight (the paper's ConvNet-SI head).
    Modifies ``head`` in place and returns it.
    """
    if not (isinstance(norm, (int, float)) and math.isfinite(norm) and norm > 0):
        raise ValueError(f"head_norm={norm!r} must be a positive finite number (paper: 10.0)")
    gen = torch.Generator().manual_seed(int(seed))
    weight = torch.empty(tuple(head.weight.shape), dtype=torch.float32)
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=gen)
    with torch.no_grad():
        head.weight.copy_(float(norm) * weight / weight.norm())
    head.weight.requires_grad_(False)
    if not bias:
        head.register_parameter("bias", None)
        return head
    bound = 1.0 / math.sqrt(weight.shape[1]) if weight.shape[1] > 0 else 0.0
    drawn = torch.empty(weight.shape[0], dtype=torch.float32).uniform_(-bound, bound, generator=gen)
    head.bias = nn.Parameter(drawn.to(head.weight), requires_grad=False)
    return head


def _head_name(model: nn.Module, layers: list[str], head: nn.Linear | None) -> str:
    if head is None:
        linears = [n for n in layers if isinstance(model.get_submodule(n), nn.Linear)]
        if not linears:
            raise ValueError(
                f"{type(model).__name__} calls no nn.Linear to freeze as the head; "
                "pass head=<the nn.Linear that produces the logits>"
            )
        return linears[-1]
    if not isinstance(head, nn.Linear):
        raise ValueError(f"head={type(head).__name__} must be an nn.Linear (the logit layer)")
    for name, mod in model.named_modules():
        if mod is head:
            return name
    raise ValueError("head is not a submodule of the model; pass one of the model's own layers")


def _refuse_leftovers(
    model: nn.Module, kept: list[str], head: str, dropped: dict[str, str]
) -> None:
    """Raise if a trainable non-SI parameter would remain once the recipe is applied."""
    norms = {id(m) for m in norm_layers(model)}
    bad = []
    for p_name, (owner, p) in owned_parameters(model).items():
        if not p.requires_grad or owner in kept or owner == head:
            continue
        if id(model.get_submodule(owner)) in norms:
            continue
        reason = dropped.get(owner, "it is not a conv/linear weight feeding a normalization")
        bad.append(f"'{p_name}' ({reason})")
    if bad:
        raise ValueError(
            "cannot make the model fully scale-invariant; trainable non-SI parameters: "
            + "; ".join(bad)
            + ". Fix: put a normalization (BatchNorm/LayerNorm/GroupNorm) after "
            "that layer, freeze it with requires_grad_(False), or pass it as head="
        )


def _drop_affine(norm: nn.Module) -> None:
    for flag in ("affine", "elementwise_affine"):
        if hasattr(norm, flag):
            setattr(norm, flag, False)
    norm.register_parameter("weight", None)
    if hasattr(norm, "bias"):
        norm.register_parameter("bias", None)


def make_scale_invariant(
    model: nn.Module, *, head: nn.Linear | None = None, head_norm: float = 10.0, head_seed: int = 0
) -> list[nn.Parameter]:
    """Turn ``model`` into a fully SI network in place and return its SI weights
    (docs/science.md#fully-scale-invariant-networks).

    Every normalization loses its affine parameters, the convs/linears that feed a norm lose
    their bias, and the last nn.Linear of the forward pass (or ``head``) is redrawn at Frobenius
    norm ``head_norm`` from a generator seeded with ``head_seed`` and frozen. The SI weights are
    found from the torch.fx graph. Raises ValueError (before changing anything) if a trainable
    parameter would remain that is not SI, naming it and the fix.
    """
    graph = trace(model)
    layers = weight_layers(graph, model)
    head_name = _head_name(model, layers, head)
    candidates = {n: [_weight(model, n)] for n in layers if n != head_name}
    bias_free = {id(model.get_submodule(n)) for n in candidates}
    kept, dropped = find_si_parameters(model, candidates, bias_free, graph)
    _refuse_leftovers(model, kept, head_name, dropped)
    for norm in norm_layers(model):
        _drop_affine(norm)
    for name in kept:
        model.get_submodule(name).register_parameter("bias", None)
    freeze_head(cast(nn.Linear, model.get_submodule(head_name)), norm=head_norm, seed=head_seed)
    logger.info(
        "made %s scale-invariant: %d SI tensors, head '%s' frozen at norm %g",
        type(model).__name__,
        len(kept),
        head_name,
        head_norm,
    )
    return [_weight(model, n) for n in kept]


def _weight(model: nn.Module, name: str) -> nn.Parameter:
    """The weight of the conv/linear layer ``name`` (torch types a module attribute loosely)."""
    return cast(nn.Parameter, model.get_submodule(name).weight)
