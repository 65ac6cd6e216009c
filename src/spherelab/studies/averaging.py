"""Weight averaging and interpolation on the sphere: SWA of directions, slerp, loss barriers.

* SWA on the sphere (``average_directions``, ``swa``): the SI weights of K solutions are
  normalized to unit joint norm, averaged, and the mean direction is rescaled to the radius
  (by default the mean of the K joint norms; on the sphere they are all rho0). Parameters that
  are not SI (affine norms, a trainable head) are averaged arithmetically. The BN running
  statistics of the average are recomputed by a pass over training batches in train mode
  (``recompute_bn_stats``): with ``momentum=None`` BatchNorm keeps the plain average of the
  per-batch means and unbiased variances.
* Geodesic (``slerp``, ``geodesic``): the great-circle path between two directions, with the
  norm interpolated linearly, so both endpoints are reproduced exactly and with equal radii the
  path stays on the sphere. The loss along it is the train loss as in the records (BN in train
  mode over fixed batches, running statistics untouched). Its **barrier** is
  max_t L(t) - max(L(0), L(1)) (>= 0; 0 when the path never rises above the worse endpoint);
  ``barrier_to_mean`` = max_t L(t) - (L(0) + L(1)) / 2 is reported too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from spherelab.metrics.geometry import joint_norm
from spherelab.metrics.state import dot, preserved_state
from spherelab.report.style import new_figure
from spherelab.sphere.check import si_parameters
from spherelab.train.checkpoints import load_checkpoint
from spherelab.train.losses import LossFn, batch_sums, cross_entropy

Batches = Sequence[tuple[Tensor, Tensor]]
PARALLEL = 1e-12  # below this angle (rad) two directions count as equal: slerp is linear


def _unit(tensors: Sequence[Tensor]) -> tuple[list[Tensor], Tensor]:
    norm = joint_norm(tensors)
    if not float(norm) > 0:
        raise ValueError("a set of SI weights has joint norm 0; it has no direction to average")
    return [t / norm for t in tensors], norm


def average_directions(
    states: Sequence[Sequence[Tensor]], radius: float | None = None
) -> list[Tensor]:
    """Mean of the unit directions of K joint vectors, rescaled to radius (default: mean norm)."""
    if not states:
        raise ValueError("average_directions got no solutions; pass at least one list of tensors")
    units, norms = zip(*(_unit(list(s)) for s in states))
    mean = [torch.stack(parts).mean(0) for parts in zip(*units)]
    length = joint_norm(mean)
    if not float(length) > 1e-12:
        raise ValueError(
            "the directions cancel out (their mean is ~0): the solutions are "
            "spread over the sphere; average fewer or closer checkpoints"
        )
    target = float(torch.stack(list(norms)).mean()) if radius is None else float(radius)
    return [t * (target / length) for t in mean]


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, batches: Batches) -> None:
    """Reset every BatchNorm's running statistics and re-estimate them over ``batches``."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.momentum, m.training) for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every batch weighs the same
    model.train()
    try:
        for x, _ in batches:
            model(x)
    finally:
        for m, momentum, mode in saved:
            m.momentum = momentum
            m.training = mode
        model.train(was_training)


def swa(
    model: nn.Module,
    states: Sequence[Mapping[str, Tensor]],
    batches: Batches,
    radius: float | None = None,
) -> nn.Module:
    """Load into ``model`` the sphere average of K state dicts; recompute its BN statistics."""
    if not states:
        raise ValueError("swa got no state dicts; pass the 'model' entries of K checkpoints")
    names = {id(p): n for n, p in model.named_parameters()}
    si_names = [names[id(p)] for p in si_parameters(model)]
    merged = dict(model.state_dict())
    averaged = average_directions([[s[n] for n in si_names] for s in states], radius)
    merged.update(zip(si_names, averaged))
    for key, value in merged.items():
        if key not in si_names and torch.is_floating_point(value):
            merged[key] = torch.stack([s[key] for s in states]).mean(0)
    model.load_state_dict(merged)
    recompute_bn_stats(model, batches)
    return model


def load_states(paths: Sequence[str | Path], device: torch.device | str = "cpu") -> list[dict]:
    """The model state dicts of checkpoint files (runs' checkpoints/step_*.pt)."""
    return [load_checkpoint(Path(p), device)["model"] for p in paths]


def slerp(a: Sequence[Tensor], b: Sequence[Tensor], t: float) -> list[Tensor]:
    """Point t in [0, 1] of the great circle from a to b (joint vectors); norm linear in t."""
    (ua, ra), (ub, rb) = _unit(a), _unit(b)
    cos = torch.clamp(dot(ua, ub), -1.0, 1.0)
    omega = float(torch.arccos(cos))
    radius = (1 - t) * ra + t * rb
    if omega < PARALLEL:
        return [((1 - t) * x + t * y) * radius for x, y in zip(ua, ub)]
    if math.pi - omega < PARALLEL:
        raise ValueError(
            "the two solutions are antipodal: the geodesic between them is not "
            "unique; pick another pair"
        )
    wa, wb = math.sin((1 - t) * omega) / math.sin(omega), math.sin(t * omega) / math.sin(omega)
    return [(wa * x + wb * y) * radius for x, y in zip(ua, ub)]


@dataclass(frozen=True)
class GeodesicResult:
    ts: list[float]
    losses: list[float]
    accuracies: list[float]
    barrier: float  # max_t L(t) - max(L(0), L(1))
    barrier_to_mean: float  # max_t L(t) - (L(0) + L(1)) / 2
    angle: float  # angle between the two solutions (rad)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@torch.no_grad()
def _train_mode_metrics(model: nn.Module, loss_fn: LossFn, batches: Batches) -> tuple[float, float]:
    with preserved_state(model, train=True):
        sums = [batch_sums(model, loss_fn, x, y) for x, y in batches]
    n = sum(len(y) for _, y in batches)
    loss, correct = torch.stack([torch.stack([s.double(), c.double()]) for s, c in sums]).sum(0)
    return float(loss) / n, float(correct) / n


@torch.no_grad()
def geodesic(
    model: nn.Module,
    a: Sequence[Tensor],
    b: Sequence[Tensor],
    batches: Batches,
    n_points: int = 11,
    loss_fn: LossFn = cross_entropy,
) -> GeodesicResult:
    """Train loss and accuracy at n_points evenly spaced t along slerp(a, b, t); the barrier.

    ``a`` and ``b`` are the SI tensors of two solutions in the order of si_parameters(model);
    the model's own SI weights are restored afterwards.
    """
    if n_points < 2:
        raise ValueError(f"n_points={n_points}: the path needs at least its 2 endpoints")
    params = si_parameters(model)
    saved = [p.detach().clone() for p in params]
    ts = [i / (n_points - 1) for i in range(n_points)]
    losses, accs = [], []
    try:
        for t in ts:
            for p, value in zip(params, slerp(a, b, t)):
                p.copy_(value)
            loss, acc = _train_mode_metrics(model, loss_fn, batches)
            losses.append(loss)
            accs.append(acc)
    finally:
        for p, value in zip(params, saved):
            p.copy_(value)
    top = max(losses)
    ua, ub = _unit(a)[0], _unit(b)[0]
    cos = float(torch.clamp(dot(ua, ub), -1.0, 1.0))
    return GeodesicResult(
        ts,
        losses,
        accs,
        top - max(losses[0], losses[-1]),
        top - (losses[0] + losses[-1]) / 2,
        math.acos(cos),
    )


def geodesic_figure(paths: Mapping[str, GeodesicResult]) -> Figure:
    """Train loss along each named geodesic (t = 0 and 1 are the two solutions)."""
    fig = new_figure(6, 3.8)
    ax = fig.subplots()
    for name, result in paths.items():
        ax.plot(
            result.ts,
            result.losses,
            "o-",
            ms=3,
            label=f"{name} (barrier {result.barrier:.3g}, angle {result.angle:.2f} rad)",
        )
    ax.set(yscale="log", xlabel="t along the geodesic", ylabel="train loss (BN train mode)")
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    return fig
