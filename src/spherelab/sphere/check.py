"""The one place that knows what "scale-invariant" (SI) means: find, enforce and check SI weights.

A set of weights is SI when scaling all of them by one factor a > 0 leaves the model output (in
train mode, i.e. with batch statistics) unchanged. ``si_parameters`` returns a model's declared SI
weights, or finds them from its torch.fx graph; ``make_scale_invariant`` turns a user's model with
normalization layers into a fully SI one (the paper's recipe; it and ``freeze_head`` live in
``spherelab.sphere.recipe``); ``check_scale_invariance`` proves a
declaration numerically. Invariance is exact up to the eps of the normalizations:
BN(a*x) = (x - mean) / sqrt(var + eps / a**2); at PyTorch's default init var ~ 1/6 after a
BN-ReLU, so eps = 1e-5 alone moves outputs by ~1e-4 at a = 0.5. The check therefore judges with
eps ~ 0 and reports the eps-induced change separately.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from spherelab.sphere.calls import Example, Output, as_call, select_output
from spherelab.sphere.graph import (
    NORM_MODULES,
    NotTraceableError,
    find_si_parameters,
    owned_parameters,
)
from spherelab.sphere.recipe import freeze_head, make_scale_invariant
from spherelab.sphere.tracing import trace

__all__ = [
    "NotTraceableError",
    "SICheck",
    "check_scale_invariance",
    "freeze_head",
    "graph_si_parameters",
    "make_scale_invariant",
    "si_parameters",
]

logger = logging.getLogger("spherelab")

# Stand-in for eps = 0 (BatchNorm refuses 0 in training); negligible against any variance.
_TINY_EPS = 1e-300


def si_parameters(
    model: nn.Module, example: Example | None = None, *, output: Output = None
) -> list[nn.Parameter]:
    """The model's SI weights: its own ``si_parameters()`` if declared, else the graph analysis
    (``example``: an input batch, needed for models torch.fx cannot trace; ``output`` names the
    logits, see spherelab.sphere.calls)."""
    declared = getattr(model, "si_parameters", None)
    if callable(declared):
        return list(declared())
    return graph_si_parameters(model, example, output=output)


def layer_candidates(model: nn.Module, layers: Iterable[str]) -> dict[str, list[nn.Parameter]]:
    """Layer name -> its trainable weight and bias (scaled together), for layers that have any."""
    candidates = {}
    for name in layers:
        params = [p for p in model.get_submodule(name).parameters(recurse=False) if p.requires_grad]
        if params:
            candidates[name] = params
    return candidates


def graph_si_parameters(
    model: nn.Module, example: Example | None = None, *, output: Output = None
) -> list[nn.Parameter]:
    """Trainable conv/linear/embedding parameters that the op graph shows to be jointly SI.

    A layer qualifies when its output reaches a normalization through positively homogeneous
    ops only (relu, pooling, add, permutes, views, ...). Its bias counts too: (weight, bias)
    scaled together is SI before any norm. Raises NotTraceableError for models that cannot be
    traced (torch.fx without ``example``, torch.export with it).
    """
    graph = trace(model, example, output)
    candidates = layer_candidates(model, graph.layers())
    kept, dropped = find_si_parameters(graph, candidates)
    for owner, reason in dropped.items():
        logger.debug("layer %s is not scale-invariant: %s", owner, reason)
    found = {id(p) for name in kept for p in candidates[name]}
    return [p for _, (_, p) in owned_parameters(model).items() if id(p) in found]


@dataclass(frozen=True)
class SICheck:
    """Result of check_scale_invariance; ``str()`` gives a readable report.

    Changes are max over ``scales`` of max|f(a w) - f(w)| / max|f(w)| (model output ``f``).
    ``max_rel_change``: joint scaling of the declared weights with every norm's eps set to ~0,
    so only rounding remains for truly SI weights; ``ok`` is ``max_rel_change <= tol``.
    ``rel_change_with_eps``: the same with the model's own eps; the difference (``eps_error``)
    is the approximation due to eps, about |1/a^2 - 1| eps / (2 var) per norm.
    ``per_tensor``: eps-free change when one tensor at a time is scaled (informational: a
    pre-activation ResNet is only jointly SI; empty if not probed). ``non_si``: if the joint check fails, the tensors
    whose own scaling changes the output.
    """

    ok: bool
    max_rel_change: float
    rel_change_with_eps: float
    per_tensor: dict[str, float]
    non_si: list[str]
    scales: tuple[float, ...]
    tol: float

    @property
    def eps_error(self) -> float:
        """Output change caused by the norms' eps (0 if rounding dominates)."""
        return max(self.rel_change_with_eps - self.max_rel_change, 0.0)

    def __str__(self) -> str:
        verdict = "OK" if self.ok else "FAILED"
        scales = ", ".join(f"x{a:g}" for a in self.scales)
        lines = [
            (
                f"scale invariance {verdict}: joint scaling ({scales}) "
                f"changes the output by {self.max_rel_change:.3g} (relative, norm eps ~ 0, "
                f"tol {self.tol:g})"
            ),
            (
                f"  with the model's norm eps: {self.rel_change_with_eps:.3g} "
                f"(eps error {self.eps_error:.3g})"
            ),
        ]
        if self.non_si:
            lines.append(
                "  not SI on their own: "
                + ", ".join(f"{n} ({self.per_tensor[n]:.3g})" for n in self.non_si)
            )
        return "\n".join(lines)


@contextlib.contextmanager
def _restored(model: nn.Module, params: Sequence[nn.Parameter]) -> Iterator[None]:
    """Restore train/eval flags, buffers (BN running stats), params and norm eps on exit."""
    modes = [(m, m.training) for m in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    values = [(p, p.detach().clone()) for p in params]
    eps = [(m, m.eps) for m in model.modules() if isinstance(m, NORM_MODULES)]
    try:
        yield
    finally:
        with torch.no_grad():
            for tensor, saved in buffers + values:
                tensor.copy_(saved)
        for mod, flag in modes:
            mod.training = flag
        for mod, value in eps:
            mod.eps = value


@dataclass(frozen=True)
class _Call:
    """How to call the model on the batch and which output holds the logits."""

    args: tuple
    kwargs: dict
    output: Output

    def __call__(self, model: nn.Module) -> torch.Tensor:
        """Forward pass with a fixed RNG seed, so that dropout draws the same mask every time."""
        tensors = [t for t in (*self.args, *self.kwargs.values()) if isinstance(t, torch.Tensor)]
        cuda = sorted({t.device for t in tensors if t.device.type == "cuda"}, key=str)
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(0)
            out = model(*self.args, **self.kwargs)
        return select_output(out, self.output)


def _rel_change(
    model: nn.Module,
    inputs: _Call,
    params: Sequence[nn.Parameter],
    scales: Sequence[float],
    ref: torch.Tensor,
) -> float:
    """max over scales of the relative output change when ``params`` are scaled jointly."""
    saved = [p.detach().clone() for p in params]
    worst = 0.0
    for scale in scales:
        for p, value in zip(params, saved):
            p.copy_(value * scale)
        change = (inputs(model) - ref).abs().max() / ref.abs().max().clamp_min(1e-30)
        worst = max(worst, float(change))
    for p, value in zip(params, saved):
        p.copy_(value)
    return worst


def _names(model: nn.Module, params: Sequence[nn.Parameter]) -> list[str]:
    by_id = {id(p): name for name, p in model.named_parameters()}
    return [by_id.get(id(p), f"<param {i} not in model>") for i, p in enumerate(params)]


def check_scale_invariance(
    model: nn.Module,
    batch: Example,
    params: Iterable[nn.Parameter] | None = None,
    scales: Sequence[float] = (0.5, 2.0),
    tol: float = 1e-4,
    *,
    probe_tensors: bool = True,
    output: Output = None,
) -> SICheck:
    """Numerically check that the model output is invariant to scaling ``params`` jointly.

    Runs in train mode (batch statistics) on ``batch`` (an input tensor, a tuple whose first
    item is the input, or a dict of keyword arguments); ``output`` names the logits of a model
    that returns a dict/dataclass (spherelab.sphere.calls). The model's mode, BN running
    buffers, eps and parameters are restored. ``params`` defaults to ``si_parameters``. The
    verdict uses eps ~ 0 (module norms only; a functional norm keeps its eps) and the report
    gives the eps-induced change separately.
    ``probe_tensors=False`` probes tensors one at a time only when the joint check fails
    (2 forward passes per tensor saved on big models).
    """
    params = list(si_parameters(model, batch, output=output) if params is None else params)
    if not params:
        raise ValueError("no parameters to check; pass params= or declare si_parameters()")
    if not scales or any(not a > 0 or a == 1 for a in scales):
        raise ValueError(
            f"scales={tuple(scales)} must be positive factors other than 1, e.g. (0.5, 2.0)"
        )
    inputs = _Call(*as_call(batch), output)
    with _restored(model, params), torch.no_grad():
        model.train()
        with_eps = _rel_change(model, inputs, params, scales, inputs(model))
        for mod in model.modules():
            if isinstance(mod, NORM_MODULES):
                mod.eps = _TINY_EPS
        ref = inputs(model)
        joint = _rel_change(model, inputs, params, scales, ref)
        ok = joint <= tol
        per_tensor = {}
        if probe_tensors or not ok:
            per_tensor = {
                name: _rel_change(model, inputs, [p], scales, ref)
                for name, p in zip(_names(model, params), params)
            }
    non_si = [] if ok else [n for n, v in per_tensor.items() if not v <= tol]
    logger.debug("check_scale_invariance: %s", "OK" if ok else "FAILED")
    return SICheck(
        ok=ok,
        max_rel_change=joint,
        rel_change_with_eps=with_eps,
        per_tensor=per_tensor,
        non_si=non_si,
        scales=tuple(scales),
        tol=tol,
    )
