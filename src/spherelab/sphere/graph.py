"""Find scale-invariant weights from a model's op graph (private helper of the SI modules).

The graph (``OpGraph``, built by ``spherelab.sphere.tracing`` from torch.fx or torch.export) is a
list of ops of a few kinds. Every value gets a *degree* of positive homogeneity in the joint scale
``a`` of a candidate set S of weights: the value is multiplied by ``a**k`` when every weight in S
is. Inputs and constants have degree 0; a layer (conv/linear/embedding) whose weight is in S adds
1; relu, pooling, views and permutes keep the degree; add/cat need equal degrees; mul/div/matmul
add/subtract them; a normalization maps any degree to 0; attention needs invariant queries and
keys; any other op is fine on degree-0 inputs only (e.g. softmax of an invariant value) and
*breaks* homogeneity otherwise. The network is SI in S iff its output has degree 0. Weights whose
homogeneous flow reaches the output or a breaking op are dropped from S until the rest is
consistent (a fixed point); each dropped layer keeps the reason it was dropped.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from torch import nn

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
WEIGHT_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)

# Op kinds; an op's ``args`` are the op indices of its tensor operands (None: a constant).
INPUT, CONST, LAYER, NORM, KEEP, ADD, MUL, DIV, ATTENTION, OTHER = (
    "input", "const", "layer", "norm", "keep", "add", "mul", "div", "attention", "other"
)  # fmt: skip

_BROKEN = None  # degree of a value that is not positively homogeneous in the scale


class NotTraceableError(ValueError):
    """The model cannot be traced, so its SI weights cannot be found from its graph."""


@dataclass(frozen=True)
class Op:
    """One value of the graph. ``layer`` ops (x, weight, bias operands) carry their owner module
    name and the ids of the weight/bias parameters it owns; ``what`` is the readable target."""

    name: str
    kind: str
    args: tuple[int | None, ...] = ()
    what: str = ""
    owner: str = ""
    weight: int | None = None  # id() of the owned weight parameter
    bias: int | None = None  # id() of the owned bias parameter


@dataclass(frozen=True)
class OpGraph:
    """The ops in execution order, the indices of the outputs, and how it was traced."""

    ops: tuple[Op, ...]
    outputs: tuple[int, ...]
    method: str  # "torch.fx" | "torch.export"
    seconds: float = 0.0

    def layers(self) -> list[str]:
        """Owner names of the layers in the order the forward pass calls them (no repeats)."""
        return list(dict.fromkeys(op.owner for op in self.ops if op.kind == LAYER and op.owner))


@dataclass
class _Flow:
    """Degree and homogeneous sources (SI owners upstream, no norm between) per op."""

    degree: list[int | None] = field(default_factory=list)
    sources: list[frozenset[str]] = field(default_factory=list)
    offenders: dict[str, str] = field(default_factory=dict)  # owner -> reason it is not SI


def _deg(flow: _Flow, arg: int | None) -> int | None:
    return 0 if arg is None else flow.degree[arg]


def _layer_degree(op: Op, flow: _Flow, si: set[int], bias_free: Collection[str]) -> int | None:
    x, w, b = (*op.args, None, None, None)[:3]
    parts = [_deg(flow, x), _deg(flow, w)]
    if _BROKEN in parts:
        return _BROKEN
    d_out = sum(d for d in parts if d is not None) + (1 if op.weight in si else 0)
    if (op.bias is None and b is None) or op.owner in bias_free:
        return d_out
    d_bias = _deg(flow, b)
    if d_bias is not _BROKEN and op.bias is not None:
        d_bias += 1 if op.bias in si else 0
    return d_out if d_bias == d_out else _BROKEN


def _degree(op: Op, flow: _Flow, si: set[int], bias_free: Collection[str]) -> int | None:
    ins = [_deg(flow, a) for a in op.args]
    if op.kind in (INPUT, CONST):
        return 0
    if op.kind == LAYER:
        return _layer_degree(op, flow, si, bias_free)
    if op.kind == NORM:
        return _BROKEN if _BROKEN in ins else 0
    if op.kind == KEEP:
        return ins[0] if ins else 0
    if op.kind == ADD:
        return ins[0] if ins and ins[0] is not None and all(d == ins[0] for d in ins) else _BROKEN
    if op.kind in (MUL, DIV):
        if _BROKEN in ins:
            return _BROKEN
        d = [d for d in ins if d is not None] + [0, 0]
        return d[0] - d[1] if op.kind == DIV else sum(d)
    if op.kind == ATTENTION:  # softmax(q k^T) v: invariant queries and keys, homogeneous values
        return ins[2] if ins[:2] == [0, 0] else _BROKEN
    return 0 if all(d == 0 for d in ins) else _BROKEN


def _reason(op: Op, flow: _Flow) -> str:
    """Why homogeneity breaks at ``op`` (its inputs are all homogeneous)."""
    where = f"graph node '{op.name}'"
    if op.kind == ADD:
        return f"feeds the residual stream, no norm before the next add ({where})"
    if op.kind == ATTENTION:
        return f"feeds the attention scores (softmax of queries x keys) at {where}"
    if op.kind == LAYER:
        return f"its bias does not scale with its output at {where}; remove the bias or add a norm"
    return f"passes through {op.what or op.kind} at {where} before any normalization"


def _propagate(graph: OpGraph, si: set[int], bias_free: Collection[str]) -> _Flow:
    flow = _Flow()
    for op in graph.ops:
        in_src: frozenset[str] = frozenset().union(
            *(flow.sources[a] for a in op.args if a is not None)
        )
        deg = _degree(op, flow, si, bias_free)
        if op.kind == NORM and deg == 0:
            in_src = frozenset()
        elif op.kind == LAYER and op.weight in si:
            in_src = in_src | {op.owner}
        inputs_ok = all(_deg(flow, a) is not _BROKEN for a in op.args)
        if deg is _BROKEN and inputs_ok:
            for owner in in_src:
                flow.offenders.setdefault(owner, _reason(op, flow))
        flow.degree.append(deg)
        flow.sources.append(in_src)
    for out in graph.outputs:
        if flow.degree[out] not in (_BROKEN, 0):  # a broken value was blamed where it broke
            for owner in flow.sources[out]:
                flow.offenders.setdefault(
                    owner, "its output reaches the model output without a normalization"
                )
    return flow


def find_si_parameters(
    graph: OpGraph,
    candidates: dict[str, list[nn.Parameter]],
    bias_free: Collection[str] = frozenset(),
) -> tuple[list[str], dict[str, str]]:
    """Largest consistent subset of ``candidates`` (owner module name -> its weights).

    Returns the SI owners (in the given order) and, for every dropped owner, why it is not SI.
    ``bias_free`` holds names of layers whose bias is treated as removed.
    """
    kept, dropped = dict(candidates), {}
    while kept:
        si = {id(p) for params in kept.values() for p in params}
        offenders = _propagate(graph, si, bias_free).offenders
        offenders = {o: r for o, r in offenders.items() if o in kept}
        if not offenders:
            break
        for owner, reason in offenders.items():
            dropped[owner] = reason
            kept.pop(owner)
    return list(kept), dropped


def norm_layers(model: nn.Module) -> list[nn.Module]:
    """All normalization modules of ``model`` (subclasses included)."""
    return [m for m in model.modules() if isinstance(m, NORM_MODULES)]


def owned_parameters(model: nn.Module) -> dict[str, tuple[str, nn.Parameter]]:
    """Parameter name -> (name of the module that owns it, parameter)."""
    owned: dict[str, tuple[str, nn.Parameter]] = {}
    for mod_name, mod in model.named_modules():
        for p_name, p in mod.named_parameters(recurse=False):
            owned.setdefault(f"{mod_name}.{p_name}" if mod_name else p_name, (mod_name, p))
    return owned
