"""Turn a model into the op graph that the SI analysis reads (``spherelab.sphere.graph``).

torch.fx traces a model without running it and is fast, but fails on Python control flow that
depends on the input (shape checks, ``if mask is not None``, output dataclasses built on the
fly). So torch.fx is used only for a forward that takes one input and no example is needed;
otherwise, given an example input, the model is traced with ``torch.export`` (non-strict), which
runs the Python code for that input and records the ATen ops it reaches. A normalization is
recognised as a module (any subclass of the torch norms, whatever its forward does inside, e.g.
permutes around a channels-first LayerNorm) through the graph's module stack, or as an ATen norm op.
"""

from __future__ import annotations

import contextlib
import inspect
import operator
import time
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from spherelab.sphere.calls import Example, Output, Selected, as_call
from spherelab.sphere.graph import (
    ADD,
    ATTENTION,
    CONST,
    DIV,
    INPUT,
    KEEP,
    LAYER,
    MUL,
    NORM,
    NORM_MODULES,
    OTHER,
    WEIGHT_MODULES,
    NotTraceableError,
    Op,
    OpGraph,
)

_KEEP_MODULES = (
    nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Flatten, nn.Unflatten,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
)  # fmt: skip
# torch.fx call_function / call_method targets by kind (positively homogeneous ops keep).
_FX_KINDS: dict[Any, str] = {
    **dict.fromkeys(
        [F.batch_norm, F.layer_norm, F.group_norm, F.instance_norm, F.rms_norm, F.normalize], NORM
    ),
    **dict.fromkeys(
        [
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
        ],
        KEEP,
    ),  # fmt: skip
    **dict.fromkeys(["size", "dim", "numel", getattr], CONST),
    **dict.fromkeys(
        [operator.add, operator.sub, operator.iadd, torch.add, torch.sub, "add", "sub", "add_"],
        ADD,
    ),
    **dict.fromkeys([torch.cat, torch.stack], ADD),
    **dict.fromkeys(
        [operator.mul, torch.mul, operator.matmul, torch.matmul, torch.mm, torch.bmm, "mul"]
        + ["matmul"],
        MUL,
    ),
    **dict.fromkeys([operator.truediv, torch.div, "div"], DIV),
    **dict.fromkeys([F.linear, F.conv1d, F.conv2d, F.conv3d, F.embedding], LAYER),
}
_LISTED = {torch.cat, torch.stack}  # their operands come as one list
# ATen op names (overload packets, in-place "_" stripped) by kind.
_ATEN_KINDS: dict[str, str] = {
    **dict.fromkeys(
        "batch_norm layer_norm group_norm instance_norm rms_norm native_layer_norm "
        "native_batch_norm native_group_norm _native_batch_norm_legit "
        "_native_batch_norm_legit_functional _native_batch_norm_legit_no_training "
        "_batch_norm_with_update _batch_norm_no_update cudnn_batch_norm".split(),
        NORM,
    ),
    **dict.fromkeys(
        "relu leaky_relu dropout native_dropout feature_dropout view reshape _reshape_alias "
        "_unsafe_view permute transpose t flatten unflatten squeeze unsqueeze expand contiguous "
        "clone alias detach _to_copy to mean sum max_pool1d max_pool2d max_pool3d "
        "max_pool2d_with_indices max_pool3d_with_indices avg_pool1d avg_pool2d avg_pool3d "
        "adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d adaptive_max_pool1d "
        "adaptive_max_pool2d adaptive_max_pool3d slice select narrow split split_with_sizes "
        "chunk unbind getitem neg pixel_shuffle pixel_unshuffle channel_shuffle roll flip "
        "repeat index_select gather index".split(),
        KEEP,
    ),
    **dict.fromkeys("add sub cat stack concat concatenate".split(), ADD),
    **dict.fromkeys("mul matmul mm bmm".split(), MUL),
    "div": DIV,
    "scaled_dot_product_attention": ATTENTION,
    **dict.fromkeys("linear conv1d conv2d conv3d convolution _convolution".split(), LAYER),
    "embedding": LAYER,
}


def _index(idx: dict[fx.Node, int], arg: object) -> int | None:
    return idx.get(arg) if isinstance(arg, fx.Node) else None


def _operands(node: fx.Node, kind: str, idx: dict[fx.Node, int], listed: bool) -> tuple:
    """The op indices of a node's tensor operands, in the positions its kind reads."""
    args = node.args
    if kind in (ADD, MUL, DIV) and listed:
        return tuple(_index(idx, a) for a in args[0])  # type: ignore[union-attr]
    if kind in (ADD, MUL, DIV):
        return tuple(_index(idx, a) for a in args[:2])
    if kind == KEEP:
        return (_index(idx, args[0]),) if args else ()
    if kind == ATTENTION:
        return tuple(_index(idx, a) for a in args[:3])
    return tuple(idx[a] for a in node.all_input_nodes)


class _Norms:
    """Whether a node runs inside a normalization module, from its ``nn_module_stack``."""

    def __init__(self, root: nn.Module) -> None:
        self.root = root
        self.cache: dict[str, bool] = {}

    def _is_norm(self, path: str) -> bool:
        path = path.split("@")[0]
        if path not in self.cache:
            try:
                self.cache[path] = isinstance(self.root.get_submodule(path), NORM_MODULES)
            except AttributeError:
                self.cache[path] = False
        return self.cache[path]

    def inside(self, node: fx.Node) -> bool:
        stack = node.meta.get("nn_module_stack") or {}
        return any(self._is_norm(str(v[0])) for v in stack.values() if isinstance(v, tuple))


def _fx_op(
    node: fx.Node, model: nn.Module, idx: dict[fx.Node, int], norms: _Norms, params: _Params
) -> Op:
    name, target = node.name, node.target
    if node.op == "placeholder":
        return Op(name, INPUT)
    if node.op == "get_attr":
        return Op(name, CONST)
    if node.op == "call_module":
        mod = model.get_submodule(str(target))
        ins = tuple(idx[a] for a in node.all_input_nodes)
        if isinstance(mod, NORM_MODULES):
            return Op(name, NORM, ins, type(mod).__name__)
        if isinstance(mod, WEIGHT_MODULES):
            bias = getattr(mod, "bias", None)
            return Op(name, LAYER, ins[:1], type(mod).__name__, str(target), id(mod.weight),
                      None if bias is None else id(bias))  # fmt: skip
        kind = KEEP if isinstance(mod, _KEEP_MODULES) else OTHER
        return Op(name, kind, ins, type(mod).__name__)
    kind = NORM if norms.inside(node) else _FX_KINDS.get(target, OTHER)
    what = getattr(target, "__name__", str(target))
    if kind == LAYER:
        return _layer_op(node, idx, params, what)
    return Op(name, kind, _operands(node, kind, idx, target in _LISTED), what)


def _trace_fx(model: nn.Module) -> OpGraph:
    start = time.perf_counter()
    graph = fx.symbolic_trace(model).graph
    idx: dict[fx.Node, int] = {}
    ops: list[Op] = []
    outputs: tuple[int, ...] = ()
    norms = _Norms(model)
    owned = {name for name, _ in model.named_parameters()}
    params = _Params(
        model,
        {n.name: str(n.target) for n in graph.nodes if n.op == "get_attr" and n.target in owned},
    )
    for node in graph.nodes:
        if node.op == "output":
            outputs = tuple(idx[a] for a in node.all_input_nodes)
            continue
        idx[node] = len(ops)
        ops.append(_fx_op(node, model, idx, norms, params))
    return OpGraph(tuple(ops), outputs, "torch.fx", time.perf_counter() - start)


def _aten_name(target: object) -> str:
    packet = getattr(target, "_overloadpacket", None)
    name = str(getattr(packet, "__name__", None) or getattr(target, "__name__", target))
    return name if name.startswith("_") else name.rstrip("_")


class _Params:
    """Graph nodes that are parameters (export placeholders, fx get_attr nodes), by node name:
    the parameter's id and the name of the module that owns it."""

    def __init__(self, root: nn.Module, names: dict[str, str], prefix: str = "") -> None:
        self.ids: dict[str, int] = {}
        self.owners: dict[str, str] = {}
        for node_name, fqn in names.items():
            self.ids[node_name] = id(root.get_parameter(fqn))
            self.owners[node_name] = fqn.removeprefix(prefix).rpartition(".")[0]


def _layer_op(node: fx.Node, idx: dict[fx.Node, int], params: _Params, what: str) -> Op:
    """A conv/linear/embedding call: (x, weight, bias) operands, aten or torch.nn.functional
    argument order (aten.embedding takes the weight first, F.embedding the indices)."""
    args = list(node.args) + [None, None, None]
    if node.target is F.embedding:
        x, w, b = None, args[1], None
    elif what == "embedding":
        x, w, b = None, args[0], None
    else:
        x, w, b = args[0], args[1], node.kwargs.get("bias", args[2])
    w_name, b_name = getattr(w, "name", ""), getattr(b, "name", "")
    return Op(
        node.name, LAYER, (_index(idx, x), _index(idx, w), _index(idx, b)), what,
        params.owners.get(w_name, ""), params.ids.get(w_name), params.ids.get(b_name),
    )  # fmt: skip


def _export_op(node: fx.Node, idx: dict[fx.Node, int], params: _Params, norms: _Norms) -> Op:
    if node.op == "placeholder":
        return Op(node.name, INPUT)
    if node.op != "call_function":
        return Op(node.name, CONST)
    what = _aten_name(node.target)
    if what.startswith(("_assert", "sym_")):
        return Op(node.name, CONST, (), what)
    kind = NORM if norms.inside(node) else _ATEN_KINDS.get(what, OTHER)
    if node.target is operator.getitem:
        kind = KEEP
    if kind == LAYER:
        return _layer_op(node, idx, params, what)
    listed = bool(node.args) and isinstance(node.args[0], (list, tuple))
    return Op(node.name, kind, _operands(node, kind, idx, listed), what)


@contextlib.contextmanager
def _train_mode(model: nn.Module) -> Iterator[None]:
    """Trace in train mode (batch statistics: what SI means), then restore every flag."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.train()
        yield
    finally:
        for mod, flag in modes:
            mod.training = flag


def _trace_export(model: nn.Module, example: Example, output: Output) -> OpGraph:
    args, kwargs = as_call(example)
    wrapper = Selected(model, output)
    start = time.perf_counter()
    with _train_mode(model):
        ep = torch.export.export(wrapper, args, kwargs, strict=False)
    graph = ep.graph_module.graph
    params = _Params(wrapper, dict(ep.graph_signature.inputs_to_parameters), "model.")
    norms = _Norms(wrapper)
    user = {spec.arg.name for spec in ep.graph_signature.output_specs
            if spec.kind == torch.export.graph_signature.OutputKind.USER_OUTPUT}  # fmt: skip
    idx: dict[fx.Node, int] = {}
    ops: list[Op] = []
    for node in graph.nodes:
        if node.op != "output":
            idx[node] = len(ops)
            ops.append(_export_op(node, idx, params, norms))
    outputs = tuple(idx[n] for n in idx if n.name in user)
    return OpGraph(tuple(ops), outputs, "torch.export", time.perf_counter() - start)


def _one_input(model: nn.Module) -> bool:
    try:
        return len(inspect.signature(model.forward).parameters) == 1
    except (TypeError, ValueError):
        return False


def _first_line(err: Exception | None) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def trace(
    model: nn.Module, example: Example | None = None, output: Output = None, method: str = "auto"
) -> OpGraph:
    """The op graph of ``model`` (called as ``example`` says, logits picked by ``output``; see
    spherelab.sphere.calls). ``method="auto"``: torch.fx for a one-input forward when that
    works, else torch.export for the example; ``"fx"`` or ``"export"`` forces one (benchmarks).
    Raises NotTraceableError naming the fix."""
    if method not in ("auto", "fx", "export"):
        raise ValueError(f"method={method!r} is unknown; use auto, fx or export")
    name = type(model).__name__
    fx_err: Exception | None = None
    use_fx = example is None or (output is None and _one_input(model))
    if method == "fx" or (method == "auto" and use_fx):
        try:
            return _trace_fx(model)
        except Exception as err:  # noqa: BLE001 - fx raises many error types for Python code
            fx_err = err
    if example is None or method == "fx":
        raise NotTraceableError(
            f"cannot trace {name} with torch.fx ({_first_line(fx_err)}); pass example=<an "
            "input batch> to trace it with torch.export, or give the model a si_parameters() "
            "method that returns its SI weights"
        )
    try:
        return _trace_export(model, example, output)
    except Exception as err:  # noqa: BLE001 - export raises many error types
        raise NotTraceableError(
            f"cannot trace {name} with torch.export for the example ({_first_line(err)}); "
            "check that the model runs on the example, or give the model a si_parameters() "
            "method that returns its SI weights"
        ) from err
