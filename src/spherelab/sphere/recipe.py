"""Make a user's model fully scale-invariant in place: the paper's recipe
(docs/science.md#fully-scale-invariant-networks).

Every normalization loses its affine parameters, the convs/linears that feed a norm lose their
bias, and the logit layer is redrawn at a fixed Frobenius norm and frozen (``freeze_head``). Which
weights are SI is decided by the graph analysis (torch.fx or torch.export) (``spherelab.sphere.graph``); the public
entry points are importable from ``spherelab.sphere`` and ``spherelab``.
"""

from __future__ import annotations

import logging
import math
from typing import cast

import torch
from torch import nn

from spherelab.sphere.calls import Example, Output
from spherelab.sphere.graph import OpGraph, find_si_parameters, norm_layers, owned_parameters
from spherelab.sphere.tracing import trace

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


FREE_PARAMETER = "not a conv/linear/embedding weight (used directly in forward)"


def non_si_leftovers(
    model: nn.Module, kept: list[str], head: str, dropped: dict[str, str]
) -> dict[str, str]:
    """Trainable parameter -> why it is not SI, for those the recipe would leave behind (not a
    kept layer, not the head, not a norm's affine parameter, which the recipe removes)."""
    norms = {id(m) for m in norm_layers(model)}
    bad = {}
    for p_name, (owner, p) in owned_parameters(model).items():
        if not p.requires_grad or owner in kept or owner == head:
            continue
        if id(model.get_submodule(owner)) in norms:
            continue
        bad[p_name] = dropped.get(owner, FREE_PARAMETER)
    return bad


def _refuse_leftovers(
    model: nn.Module, kept: list[str], head: str, dropped: dict[str, str]
) -> None:
    """Raise if a trainable non-SI parameter would remain once the recipe is applied."""
    bad = non_si_leftovers(model, kept, head, dropped)
    if bad:
        raise ValueError(
            f"cannot make {type(model).__name__} fully scale-invariant; {len(bad)} trainable "
            "non-SI parameters: "
            + "; ".join(f"'{name}' ({reason})" for name, reason in bad.items())
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


def recipe_plan(
    model: nn.Module, graph: OpGraph, head: nn.Linear | None = None
) -> tuple[str, list[str], dict[str, str]]:
    """What the recipe would do, changing nothing: the head's name, the layers whose weights
    become SI (biases removed), and why each other trainable layer would not be SI."""
    layers = graph.layers()
    head_name = _head_name(model, layers, head)
    candidates = {
        n: [_weight(model, n)] for n in layers if n != head_name and _weight(model, n).requires_grad
    }
    kept, dropped = find_si_parameters(graph, candidates, bias_free=set(candidates))
    return head_name, kept, dropped


def make_scale_invariant(
    model: nn.Module,
    example: Example | None = None,
    *,
    head: nn.Linear | None = None,
    head_norm: float = 10.0,
    head_seed: int = 0,
    output: Output = None,
) -> list[nn.Parameter]:
    """Turn ``model`` into a fully SI network in place and return its SI weights
    (docs/science.md#fully-scale-invariant-networks).

    Every normalization loses its affine parameters, the convs/linears that feed a norm lose
    their bias, and the last nn.Linear of the forward pass (or ``head``) is redrawn at Frobenius
    norm ``head_norm`` from a generator seeded with ``head_seed`` and frozen. The SI weights are
    found from the model's graph: torch.fx, or torch.export for ``example`` (an input batch, a
    tuple whose first item is the input, or a dict of keyword arguments) when the forward has
    Python control flow or several arguments; ``output`` names the logits of a model that
    returns a dict/dataclass (spherelab.sphere.calls). Raises ValueError (before changing
    anything) naming every trainable parameter that would remain non-SI, why, and the fix.
    """
    head_name, kept, dropped = recipe_plan(model, trace(model, example, output), head)
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
    """The weight of the layer ``name`` (torch types a module attribute loosely)."""
    return cast(nn.Parameter, model.get_submodule(name).weight)
