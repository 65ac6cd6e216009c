"""Geometry of the SI weights on the sphere: norms, angles, angular updates and effective learning rates.

A list of tensors is treated as one flat vector: the joint vector of all SI weights
(docs/science.md#fully-scale-invariant-networks). Functions returning ``Tensor`` stay on the
device without a host sync; functions returning ``float`` read the device once at the end.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor

from spherelab.metrics.packed import member_angles
from spherelab.metrics.state import dot, positive

NamedTensors = Mapping[str, Tensor] | Iterable[tuple[str, Tensor]]


def joint_norm(tensors: Sequence[Tensor]) -> Tensor:
    """L2 norm of the concatenation of ``tensors`` (0-d tensor on their device, no host sync)."""
    tensors = [t.detach() for t in tensors]
    if not tensors:
        raise ValueError("joint_norm got an empty list: pass at least one tensor")
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))


def _named(named: NamedTensors) -> list[tuple[str, Tensor]]:
    return list(named.items()) if isinstance(named, Mapping) else list(named)


def per_tensor_norms(named_params: NamedTensors) -> dict[str, float]:
    """L2 norm of each tensor, keyed by name (accepts a dict or ``model.named_parameters()``)."""
    items = _named(named_params)
    if not items:
        return {}
    norms = torch.stack(torch._foreach_norm([t.detach() for _, t in items])).tolist()
    return {name: norm for (name, _), norm in zip(items, norms)}


def angle_tensor(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """Angle in radians between two flat vectors, as a 0-d tensor (no host sync).

    The formula is metrics.packed.member_angles' (stable for tiny angles); 0 when either vector
    is zero.
    """
    a = [t.detach() for t in a]
    b = [t.detach() for t in b]
    if len(a) != len(b) or not a:
        raise ValueError(
            f"angle needs two non-empty lists of equal length, got {len(a)} and {len(b)}"
        )
    return member_angles(a, b, 1)[0]  # the pack of one


def angle_from_sides(norm_a: Tensor, norm_b: Tensor, norm_diff: Tensor) -> Tensor:
    """Angle in radians between two vectors from their norms and the norm of their difference
    (0-d tensors, no host sync), by Kahan's stable formula for a triangle's angle: accurate for
    tiny angles, and cheaper than ``angle_tensor`` when ||a - b|| is at hand (one pass over the
    weights instead of several). 0 when either vector is zero. Its accuracy is that of the
    three norms: relative eps as long as | ||a|| - ||b|| | is not much larger than ||a - b||'s
    tangential part (true of a training step; not of two near-parallel vectors of very different
    norms, where ``angle_tensor`` is the one to use)."""
    a, b, c = torch.maximum(norm_a, norm_b), torch.minimum(norm_a, norm_b), norm_diff
    mu = torch.where(b >= c, c - (a - b), b - (a - c))
    ratio = ((a - b) + c) * mu / ((a + (b + c)) * ((a - c) + b))
    theta = 2.0 * torch.atan(ratio.clamp(min=0.0).sqrt())  # rounding may give ratio < 0
    return torch.where(b > 0, theta, torch.zeros_like(theta))


def _check_nonzero(a: Sequence[Tensor], b: Sequence[Tensor], what: str) -> None:
    na, nb = torch.stack([joint_norm(a), joint_norm(b)]).tolist()
    if na == 0.0 or nb == 0.0:
        raise ValueError(
            f"{what} is undefined for a zero vector (norms {na} and {nb}): pass nonzero weights"
        )


def angle(a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
    """Angle in radians in [0, pi] between two flat vectors; raises ValueError for a zero vector."""
    theta = angle_tensor(a, b)
    _check_nonzero(a, b, "angle")
    return float(theta)


def cosine(a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
    """Cosine similarity <a, b> / (|a| |b|) of two flat vectors."""
    _check_nonzero(a, b, "cosine")
    value = dot([t.detach() for t in a], [t.detach() for t in b]) / (joint_norm(a) * joint_norm(b))
    return float(value.clamp(-1.0, 1.0))


def angle_to_init(params: Sequence[Tensor], init: Sequence[Tensor]) -> float:
    """Angle in radians between the current SI weights and their copy saved at initialization."""
    return angle(params, init)


def per_layer_angles(
    prev: Sequence[Tensor], cur: Sequence[Tensor], names: Sequence[str]
) -> dict[str, float]:
    """Angle in radians between ``prev[i]`` and ``cur[i]`` for every tensor, keyed by ``names[i]``."""
    if not len(prev) == len(cur) == len(names):
        raise ValueError(
            f"per_layer_angles got {len(prev)} prev, {len(cur)} cur and {len(names)} names: "
            "pass one name per tensor"
        )
    if not names:
        return {}
    thetas = torch.stack([angle_tensor([p], [c]) for p, c in zip(prev, cur)]).tolist()
    return dict(zip(names, thetas))


class AngularUpdateTracker:
    """Accumulate per-step angular updates over an epoch on the device; read once at the end.

    Usage per step: ``prev = [p.detach().clone() for p in params]``, optimizer step, then
    ``tracker.update(prev, params)``. ``summary()`` does the only host sync.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget all accumulated angles (call at the start of each epoch)."""
        self._sum: Tensor | None = None
        self._max: Tensor | None = None
        self._count = 0

    def add(self, theta: Tensor) -> None:
        """Accumulate one angle given as a 0-d tensor."""
        theta = theta.detach()
        if self._sum is None or self._max is None:
            self._sum, self._max = theta.clone(), theta.clone()
        else:
            self._sum = self._sum + theta
            self._max = torch.maximum(self._max, theta)
        self._count += 1

    def update(self, prev: Sequence[Tensor], cur: Sequence[Tensor]) -> Tensor:
        """Accumulate the angle between the weights before (``prev``) and after (``cur``) a step."""
        theta = angle_tensor(prev, cur)
        self.add(theta)
        return theta

    @property
    def count(self) -> int:
        """Number of angles accumulated since the last reset."""
        return self._count

    def summary(self) -> dict[str, float]:
        """``{"mean", "max", "count"}`` of the accumulated angles (NaN mean/max when empty)."""
        if self._sum is None or self._max is None:
            return {"mean": math.nan, "max": math.nan, "count": 0}
        total, peak = torch.stack([self._sum, self._max]).tolist()
        return {"mean": total / self._count, "max": peak, "count": self._count}


def elr_at_norm(lr: float, norm: float) -> float:
    """The effective learning rate lr / norm^2 of a step of size `lr` at weights of norm `norm`
    (docs/science.md#effective-learning-rate): the one formula every ELR in spherelab uses.
    A zero norm counts as 1e-30; a NaN lr (unknown) gives NaN."""
    return lr / max(norm, 1e-30) ** 2


def effective_elr(lr: float, params: Sequence[Tensor]) -> float:
    """Effective learning rate lr / ||w||^2 at the joint norm of the SI weights."""
    return elr_at_norm(positive(lr, "lr"), float(joint_norm(params)))


def per_layer_effective_elr(lr: float, named_params: NamedTensors) -> dict[str, float]:
    """Per-tensor effective learning rate lr / ||w_l||^2, keyed by name."""
    lr = positive(lr, "lr")
    return {name: elr_at_norm(lr, norm) for name, norm in per_tensor_norms(named_params).items()}


def equilibrium_angle(lr: float, weight_decay: float, momentum: float = 0.0) -> float:
    """Per-step angle at the norm equilibrium of SGD with weight decay: sqrt(2·lr·wd / (1 + mu)).

    With plain SGD the norm balance (1 − lr·wd)^2 ||w||^2 + lr^2 ||g||^2 = ||w||^2
    (docs/science.md#conventional-training-with-weight-decay) gives
    tan(angle) = lr ||g|| / ||w|| ≈ sqrt(2·lr·wd); momentum mu divides the argument by 1 + mu.
    """
    lr = positive(lr, "lr")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay={weight_decay!r} must be a finite number >= 0")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum={momentum!r} must be in [0, 1)")
    return math.sqrt(2.0 * lr * weight_decay / (1.0 + momentum))


def equilibrium_elr(lr: float, weight_decay: float, momentum: float, eff_grad_norm: float) -> float:
    """The ELR lr / ||w||^2 at which SGD with weight decay holds the norm steady, given the
    effective gradient norm ||g|| ||w||: sqrt(2·lr·wd·(1 − mu)) / ||g_eff||.

    It equates the per-step angle of a noise-dominated heavy-ball step, ELR·||g_eff|| /
    sqrt(1 − mu^2), with ``equilibrium_angle``. NaN when the gradient norm is not positive.
    """
    angle = equilibrium_angle(lr, weight_decay, momentum)
    if not eff_grad_norm > 0:
        return math.nan
    return angle * math.sqrt(1.0 - momentum**2) / eff_grad_norm
