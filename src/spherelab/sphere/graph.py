"""Find scale-invariant weights from a model's torch.fx graph (private helper of the SI modules).

Every value in the traced graph gets a *degree* of positive homogeneity in the joint scale ``a``
of a candidate set S of weights: the value is multiplied by ``a**k`` when every weight in S is.
Inputs and constants have degree 0; a conv/linear whose weight is in S adds 1; relu, pooling,
flatten and views keep the degree; add/cat need equal degrees; mul/div/matmul add/subtract them;
a normalization maps any positive degree to 0; any other op is fine on degree-0 inputs only
(e.g. softmax of an invariant value is invariant) and *breaks* homogeneity otherwise. The network
is SI in S iff its output has degree 0. Weights whose homogeneous flow reaches the output or a
breaking op are dropped from S until the rest is consistent (a fixed point). Used by
scale_invariance (finding SI weights) and si_recipe (making a model SI).
"""

from __future__ import annotations

import operator
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import cast

import torch
import torch.nn.functional as F
from torch import fx, nn

NORM_MODULES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.RMSNorm,
)
WEIGHT_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_KEEP_MODULES = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.Identity,
    nn.Flatten,
    nn.Unflatten,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
)
_NORM_FUNCS = {F.batch_norm, F.layer_norm, F.group_norm, F.instance_norm, F.rms_norm, F.normalize}
# Positively homogeneous of degree 1 in their first argument; other args are shapes/options.
_KEEP_FUNCS = {
    F.relu,
    torch.relu,
    F.leaky_relu,
    F.dropout,
    torch.flatten,
    torch.reshape,
    torch.permute,
    torch.transpose,
    torch.squeeze,
    torch.unsqueeze,
    torch.mean,
    torch.sum,
    operator.getitem,
    operator.neg,
    torch.neg,
    F.max_pool1d,
    F.max_pool2d,
    F.max_pool3d,
    F.avg_pool1d,
    F.avg_pool2d,
    F.avg_pool3d,
    F.adaptive_max_pool1d,
    F.adaptive_max_pool2d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
}
_KEEP_METHODS = {
    "relu",
    "view",
    "view_as",
    "reshape",
    "flatten",
    "permute",
    "transpose",
    "contiguous",
    "squeeze",
    "unsqueeze",
    "mean",
    "sum",
    "expand",
    "neg",
    "clone",
    "float",
    "double",
    "to",
}
_SHAPE_METHODS = {"size", "dim", "numel"}
_ADD_FUNCS = {
    operator.add,
    operator.sub,
    operator.iadd,
    torch.add,
    torch.sub,
    torch.cat,
    torch.stack,
}
_ADD_METHODS = {"add", "sub", "add_"}
_MUL_FUNCS = {operator.mul, torch.mul, operator.matmul, torch.matmul, torch.mm, torch.bmm}
_MUL_METHODS = {"mul", "matmul"}
_DIV_FUNCS = {operator.truediv, torch.div}

_BROKEN = None  # degree of a value that is not positively homogeneous in the scale


class NotTraceableError(ValueError):
    """The model cannot be traced by torch.fx, so its SI weights cannot be found from its graph."""


@dataclass
class _Flow:
    """Degree and homogeneous sources (owners of SI weights upstream, no norm between) per node."""

    degree: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)
    offenders: dict = field(default_factory=dict)  # owner -> reason it is not SI


def trace(model: nn.Module) -> fx.Graph:
    """Trace ``model`` with torch.fx or raise NotTraceableError naming the fix."""
    try:
        return fx.symbolic_trace(model).graph
    except Exception as err:  # fx raises many error types for untraceable code
        raise NotTraceableError(
            f"cannot trace {type(model).__name__} with torch.fx ({type(err).__name__}: {err}); "
            "give the model a si_parameters() method that returns its SI weights, or remove "
            "data-dependent Python control flow from forward()"
        ) from err


def _arg_degree(flow: _Flow, arg: object) -> int | None:
    return flow.degree[arg] if isinstance(arg, fx.Node) else 0


def _common(degrees: list[int | None]) -> int | None:
    """The shared degree of the operands of a sum/concatenation, or broken if they differ."""
    if not degrees:
        return 0
    first = degrees[0]
    return first if first is not None and all(d == first for d in degrees) else _BROKEN


def _weight_module_degree(
    mod: nn.Module, d_in: int | None, si: set[int], bias_free: Collection[int]
) -> int | None:
    if d_in is _BROKEN:
        return _BROKEN
    d_out = d_in + (1 if id(mod.weight) in si else 0)
    bias = mod.bias
    if bias is None or id(mod) in bias_free:
        return d_out
    return d_out if d_out == (1 if id(bias) in si else 0) else _BROKEN


def _module_degree(
    node: fx.Node, model: nn.Module, flow: _Flow, si: set[int], bias_free: Collection[int]
) -> int | None:
    mod = model.get_submodule(cast(str, node.target))  # a call_module node targets a name
    ins = [flow.degree[a] for a in node.all_input_nodes]
    if isinstance(mod, NORM_MODULES):
        return _BROKEN if _BROKEN in ins else 0
    if isinstance(mod, WEIGHT_MODULES):
        return _weight_module_degree(mod, ins[0], si, bias_free)
    if isinstance(mod, _KEEP_MODULES):
        return ins[0]
    return 0 if all(d == 0 for d in ins) else _BROKEN


def _call_degree(node: fx.Node, flow: _Flow) -> int | None:
    """Degree of a call_function / call_method node (the tensor is args[0] for methods)."""
    t, args = node.target, node.args
    ins = [flow.degree[a] for a in node.all_input_nodes]
    if t in _NORM_FUNCS:
        return _BROKEN if _BROKEN in ins else 0
    if t in _SHAPE_METHODS or t is getattr:
        return 0
    if t in _KEEP_FUNCS or t in _KEEP_METHODS:
        return _arg_degree(flow, args[0])
    if t in _ADD_FUNCS or t in _ADD_METHODS:
        operands = (
            cast(Sequence[fx.node.Argument], args[0]) if t in (torch.cat, torch.stack) else args[:2]
        )
        return _common([_arg_degree(flow, a) for a in operands])
    if t in _MUL_FUNCS or t in _MUL_METHODS or t in _DIV_FUNCS or t == "div":
        d0, d1 = _arg_degree(flow, args[0]), _arg_degree(flow, args[1])
        if d0 is _BROKEN or d1 is _BROKEN:
            return _BROKEN
        return d0 - d1 if (t in _DIV_FUNCS or t == "div") else d0 + d1
    return 0 if all(d == 0 for d in ins) else _BROKEN


def _propagate(
    graph: fx.Graph, model: nn.Module, si: set[int], bias_free: Collection[int]
) -> _Flow:
    flow = _Flow()
    for node in graph.nodes:
        in_src = frozenset().union(*(flow.sources[a] for a in node.all_input_nodes))
        deg: int | None
        if node.op in ("placeholder", "get_attr"):
            deg = 0
        elif node.op == "call_module":
            deg = _module_degree(node, model, flow, si, bias_free)
            mod = model.get_submodule(node.target)
            if isinstance(mod, NORM_MODULES) and deg == 0:
                in_src = frozenset()
            elif isinstance(mod, WEIGHT_MODULES) and id(mod.weight) in si:
                in_src = in_src | {node.target}
        elif node.op == "output":
            for d, a in ((flow.degree[a], a) for a in node.all_input_nodes):
                if d is not _BROKEN and d != 0:  # a broken value was blamed where it broke
                    for owner in flow.sources[a]:
                        flow.offenders.setdefault(
                            owner, "its output reaches the model output without a normalization"
                        )
            continue
        else:
            deg = _call_degree(node, flow)
            if node.target in _NORM_FUNCS and deg == 0:
                in_src = frozenset()
        inputs_ok = all(flow.degree[a] is not _BROKEN for a in node.all_input_nodes)
        if deg is _BROKEN and inputs_ok:
            for owner in in_src:
                flow.offenders.setdefault(
                    owner, f"homogeneity breaks at graph node '{node.name}' ({node.target})"
                )
        flow.degree[node], flow.sources[node] = deg, in_src
    return flow


def find_si_parameters(
    model: nn.Module,
    candidates: dict[str, list[nn.Parameter]],
    bias_free: Collection[int] = frozenset(),
    graph: fx.Graph | None = None,
) -> tuple[list[str], dict[str, str]]:
    """Largest consistent subset of ``candidates`` (owner module name -> its weights).

    Returns the SI owners (in the given order) and, for every dropped owner, why it is not SI.
    ``bias_free`` holds ids of modules whose bias is treated as removed.
    """
    graph = trace(model) if graph is None else graph
    kept, dropped = dict(candidates), {}
    while kept:
        si = {id(p) for params in kept.values() for p in params}
        offenders = _propagate(graph, model, si, bias_free).offenders
        if not offenders:
            break
        for owner, reason in offenders.items():
            dropped[owner] = reason
            kept.pop(owner, None)
    return list(kept), dropped


def weight_layers(graph: fx.Graph, model: nn.Module) -> list[str]:
    """Names of the conv/linear modules in the order the forward pass calls them (no repeats)."""
    names = [
        n.target
        for n in graph.nodes
        if n.op == "call_module" and isinstance(model.get_submodule(n.target), WEIGHT_MODULES)
    ]
    return list(dict.fromkeys(names))


def norm_layers(model: nn.Module) -> list[nn.Module]:
    """All normalization modules of ``model``."""
    return [m for m in model.modules() if isinstance(m, NORM_MODULES)]


def owned_parameters(model: nn.Module) -> dict[str, tuple[str, nn.Parameter]]:
    """Parameter name -> (name of the module that owns it, parameter)."""
    owned: dict[str, tuple[str, nn.Parameter]] = {}
    for mod_name, mod in model.named_modules():
        for p_name, p in mod.named_parameters(recurse=False):
            owned.setdefault(f"{mod_name}.{p_name}" if mod_name else p_name, (mod_name, p))
    return owned
