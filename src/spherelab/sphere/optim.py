"""SphereSGD: SGD at a fixed effective learning rate with the sphere constraint inside the step.

The update (the paper's rule, docs/science.md#projected-sgd-on-the-sphere), for a group on the
sphere of radius R:

    lr = elr * R**2
    b  <- momentum * b + grad                      (b = grad when momentum == 0)
    w  <- w - lr * b
    w  <- w * R / ||w||                            (retraction: one common factor per sphere)
    b  <- b - <b, w> / ||w||**2 * w                (momentum: project the buffer onto the
                                                    tangent space at the NEW point)

With momentum 0 this is exactly plain SGD with lr = ELR * rho0**2 followed by one global
rescale, i.e. u <- normalize(u - ELR * grad L(u)) for u = w / R.

``momentum_style`` says what happens to the buffer
(docs/science.md#momentum-and-sphere-granularity):
- ``tangent`` (default): the last line above; the buffer lives in the tangent space, so it
  never pushes the point off the sphere and its radial part (which the retraction would discard
  anyway) does not accumulate.
- ``paper``: the buffer is left as it is: torch's heavy-ball SGD followed by the rescale, which
  is what the paper's public code computes when it is given a momentum. The buffer then keeps
  the radial parts of past steps and is never turned with the point, so the two styles give
  different trajectories for momentum > 0 (and the same one for momentum 0).

``weight_decay`` on a sphere group is added to the gradient before the momentum, as torch's SGD
does it (``d = grad + weight_decay * w``), which is how the paper's code applies its weight
decay to the SI weights before rescaling them. Its radial pull is undone by the retraction, but
it still shortens the step in the ratio 1 : (1 - lr * weight_decay) (momentum 0), i.e. it raises
the effective step by the factor 1 / (1 - lr * weight_decay).

Sphere granularity (`sphere`):
- ``global``: all tensors of the group share one sphere (the paper); R = joint norm.
- ``per_tensor``: every tensor on its own sphere.
- ``per_filter``: every output filter (row of dim 0) on its own sphere; 1-d tensors per tensor.
- ``none``: ordinary SGD with the group's ``lr`` and ``weight_decay`` (e.g. a trainable head).

``members`` = K > 1 packs K independent runs into each tensor along dim 0 (the ensemble
engine's layout: grouped-conv weights [K*out, ...], batched-matmul weights [K, out, in]); each
member then has its own sphere(s), its own radius and, if ``elr`` is a list or a [K] tensor,
its own ELR (a device tensor, updated in place, is never copied to or from the host).

Radii are stored in the param group (``radius``: float, or a list per member / per tensor);
per-filter radii live in the optimizer state (``filter_radius``); both survive state_dict.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

import torch
from torch import Tensor
from torch.optim import Optimizer

from spherelab.sphere.units import (
    as_member_tensor,
    check_elr,
    check_radius,
    count_values,
    given_radius,
    measure_radius,
    member_rows,
    reduce_units,
    spread,
    sq_norms,
    unit_view,
)

SPHERES = ("global", "per_tensor", "per_filter", "none")
MOMENTUM_STYLES = ("tangent", "paper")


class SphereSGD(Optimizer):
    """SGD on the sphere at a fixed effective learning rate (see the module docstring)."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        elr: float | Sequence[float] | Tensor = 1e-3,
        momentum: float = 0.0,
        sphere: str = "global",
        radius: float | Sequence[float] | Tensor | None = None,
        members: int = 1,
        foreach: bool | None = None,
        momentum_style: str = "tangent",
        weight_decay: float = 0.0,
    ) -> None:
        check_elr(elr)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum={momentum} is outside [0, 1); use e.g. momentum=0.9")
        defaults = dict(
            elr=elr,
            momentum=momentum,
            sphere=sphere,
            radius=radius,
            members=members,
            lr=0.0,
            weight_decay=weight_decay,
            foreach=foreach,
            momentum_style=momentum_style,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """State dicts saved before momentum_style existed load as the tangent style."""
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("momentum_style", "tangent")

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group and measure its radius (or per-filter radii) now, as at construction."""
        super().add_param_group(param_group)
        self._init_group(self.param_groups[-1])

    # ----------------------------------------------------------------- set-up
    def _init_group(self, group: dict[str, Any]) -> None:
        if group["sphere"] not in SPHERES:
            raise ValueError(f"sphere={group['sphere']!r} is unknown; use one of {SPHERES}")
        if group["sphere"] == "none":
            return
        check_elr(group["elr"])
        if not 0.0 <= group["momentum"] < 1.0:
            raise ValueError(f"momentum={group['momentum']} is outside [0, 1); use e.g. 0.9")
        if group["momentum_style"] not in MOMENTUM_STYLES:
            raise ValueError(
                f"momentum_style={group['momentum_style']!r} is unknown; use one of "
                f"{MOMENTUM_STYLES}"
            )
        if not group["weight_decay"] >= 0.0:
            raise ValueError(f"weight_decay={group['weight_decay']} must be >= 0 (e.g. 0 or 1e-4)")
        k = int(group["members"])
        params = group["params"]
        for p in params:
            if p.shape[0] % k:
                raise ValueError(f"a tensor of shape {tuple(p.shape)} cannot hold members={k}")
        elr = group["elr"]
        if isinstance(elr, (list, tuple, Tensor)) and count_values(elr) not in (1, k):
            raise ValueError(
                f"elr has {count_values(elr)} values but members={k}; give one per member "
                "(or one for all)"
            )
        group["radius"] = given_radius(group["radius"], group["sphere"], k, len(params))
        check_radius(group["radius"])
        with torch.no_grad():
            if group["sphere"] == "per_filter":
                for p in params:
                    self.state[p]["filter_radius"] = sq_norms(p, k, "per_filter").sqrt()
                group["radius"] = None
            elif group["radius"] is None:
                group["radius"] = measure_radius(params, k, group["sphere"])
            elif group["sphere"] == "per_tensor" and not isinstance(group["radius"], list):
                group["radius"] = [group["radius"]] * len(params)  # one given radius for all
            elif group["sphere"] == "global" and k == 1 and isinstance(group["radius"], list):
                group["radius"] = float(group["radius"][0])  # given_radius checked it is one

    # ------------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[no-untyped-def]  # as torch's overloaded step
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if group["sphere"] == "none":
                _plain_sgd(self, group, params)
                continue
            directions = _momentum_directions(self, group, params)
            _descend(self, group, params, directions)
            # Retract every tensor of the group (a tensor without a gradient this step still
            # shares the sphere), then project the buffers that exist.
            _retract(self, group, list(group["params"]))
            if group["momentum"] > 0 and group["momentum_style"] == "tangent":
                with_buf = [p for p in group["params"] if "momentum_buffer" in self.state[p]]
                bufs = [self.state[p]["momentum_buffer"] for p in with_buf]
                _project_buffers(group, with_buf, bufs)
        return loss


# --------------------------------------------------------------------- helpers
def _use_foreach(group: dict[str, Any], params: list[Tensor]) -> bool:
    if group["foreach"] is not None:
        return bool(group["foreach"])
    return all(p.device == params[0].device and p.dtype == params[0].dtype for p in params)


def _momentum_directions(
    opt: SphereSGD, group: dict[str, Any], params: list[Tensor]
) -> list[Tensor]:
    grads = [cast(Tensor, p.grad) for p in params]  # step() passes only params with a grad
    if group["weight_decay"]:
        grads = list(torch._foreach_add(grads, params, alpha=group["weight_decay"]))
    mu = group["momentum"]
    if mu == 0:
        return grads
    bufs = []
    for p, g in zip(params, grads):
        state = opt.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = g.detach().clone()
        else:
            state["momentum_buffer"].mul_(mu).add_(g)
        bufs.append(state["momentum_buffer"])
    return bufs


def _lr_of(group: dict[str, Any], radius: Any, like: Tensor) -> Tensor | float:
    """lr = elr * R**2 for one sphere unit: a float when K=1 and both are numbers, else a
    tensor (device tensors are never read back to the host)."""
    elr, k = group["elr"], int(group["members"])
    if k == 1 and isinstance(radius, (int, float)) and isinstance(elr, (int, float)):
        return float(elr) * float(radius) ** 2
    r = radius if isinstance(radius, Tensor) else as_member_tensor(radius, like)
    e = as_member_tensor(elr, like)
    return e.reshape(-1, *([1] * (r.dim() - 1))) * r.square() if r.dim() > 1 else e * r.square()


def _descend(
    opt: SphereSGD, group: dict[str, Any], params: list[Tensor], dirs: list[Tensor]
) -> None:
    sphere, k = group["sphere"], int(group["members"])
    if sphere == "global":
        lr = _lr_of(group, group["radius"], params[0])
        fast = _use_foreach(group, params)
        if isinstance(lr, float) and fast:
            torch._foreach_add_(params, dirs, alpha=-lr)  # the paper's fast path: one kernel
            return
        rows, drows = member_rows(params, k), member_rows(dirs, k)
        if fast and isinstance(lr, Tensor) and rows is not None and drows is not None:
            # K members: one foreach call
            torch._foreach_addcmul_(rows, drows, [lr.reshape(-1, 1)] * len(rows), value=-1.0)
            return
    for p, d in zip(params, dirs):
        if sphere == "per_filter":
            lr = _lr_of(group, opt.state[p]["filter_radius"], p)
        elif sphere == "per_tensor":
            lr = _lr_of(group, group["radius"][_index_of(group, p)], p)
        if isinstance(lr, float):
            p.add_(d, alpha=-lr)
        else:
            (view, _), (dview, _) = unit_view(p, k, sphere), unit_view(d, k, sphere)
            view.sub_(dview * spread(lr, view))


def _index_of(group: dict[str, Any], p: Tensor) -> int:
    for i, q in enumerate(group["params"]):
        if q is p:
            return i
    raise KeyError("parameter not in group")


def _retract(opt: SphereSGD, group: dict[str, Any], params: list[Tensor]) -> None:
    sphere, k = group["sphere"], int(group["members"])
    numeric = isinstance(group["radius"], (int, float))
    if sphere == "global" and k == 1 and numeric and _use_foreach(group, params):
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(params)))
        torch._foreach_mul_(params, float(group["radius"]) / norm)
        return
    rows = member_rows(params, k)
    if sphere == "global" and rows is not None and _use_foreach(group, params):
        norms = torch.stack([torch.linalg.vector_norm(r, dim=1) for r in rows])  # [n, K]
        radius = as_member_tensor(group["radius"], params[0])
        scale = (radius / torch.linalg.vector_norm(norms, dim=0)).reshape(k, 1)
        torch._foreach_mul_(rows, [scale] * len(rows))
        return
    if sphere == "global":
        sq = cast(Tensor, sum(sq_norms(p, k, sphere) for p in params))  # a sum of tensors
        scale = as_member_tensor(group["radius"], params[0]) / sq.sqrt()
        for p in params:
            view, _ = unit_view(p, k, sphere)
            view.mul_(spread(scale, view))
        return
    for p in params:
        view, _ = unit_view(p, k, sphere)
        if sphere == "per_filter":
            target = opt.state[p]["filter_radius"]
        else:  # a number stays a number: no host-to-device copy per step
            target = group["radius"][_index_of(group, p)]
            if not isinstance(target, (int, float)):
                target = as_member_tensor(target, p)
        view.mul_(spread(target / sq_norms(p, k, sphere).sqrt(), view))


def _project_buffers(group: dict[str, Any], params: list[Tensor], bufs: list[Tensor]) -> None:
    """b <- b - <b, w>/||w||^2 w, over the same units as the sphere (tangent space)."""
    if not params:
        return
    sphere, k = group["sphere"], int(group["members"])

    def dot(p: Tensor, b: Tensor) -> Tensor:
        (pv, lead), (bv, _) = unit_view(p, k, sphere), unit_view(b, k, sphere)
        return reduce_units(pv * bv, lead)

    if sphere == "global":
        coef = cast(Tensor, sum(dot(p, b) for p, b in zip(params, bufs))) / cast(
            Tensor, sum(sq_norms(p, k, sphere) for p in params)
        )  # sums of tensors, never the int start of sum()
        coefs = [coef] * len(params)
    else:
        coefs = [dot(p, b) / sq_norms(p, k, sphere) for p, b in zip(params, bufs)]
    for p, b, c in zip(params, bufs, coefs):
        (pv, _), (bv, _) = unit_view(p, k, sphere), unit_view(b, k, sphere)
        bv.sub_(spread(c, pv) * pv)


def _plain_sgd(opt: SphereSGD, group: dict[str, Any], params: list[Tensor]) -> None:
    """Ordinary SGD (lr, weight decay, heavy-ball momentum) for groups off the sphere."""
    mu, wd, lr = group["momentum"], group["weight_decay"], group["lr"]
    for p in params:
        grad = cast(Tensor, p.grad)  # step() passes only params with a grad
        g = grad if wd == 0 else grad.add(p, alpha=wd)
        if mu > 0:
            state = opt.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = g.detach().clone()
            else:
                state["momentum_buffer"].mul_(mu).add_(g)
            g = state["momentum_buffer"]
        p.add_(g, alpha=-lr)
