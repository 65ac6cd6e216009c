"""Math on packed tensors: K members' vectors side by side, member k in block k of dim 0 (a
single model is the pack of one). ``views`` are the [K, -1] flattenings of such tensors.
Everything returns [K] tensors on the device, without a host sync. The training recorder
(K >= 1) and the landscape metrics (K = 1) share these formulas.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _total(terms: list[Tensor]) -> Tensor:
    """Left-to-right sum of tensors (as the builtin sum, without its int start)."""
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def views(tensors: Sequence[Tensor], members: int) -> list[Tensor]:
    """[K, -1] flattenings of packed tensors (batched [K, ...] and blocked [K*n, ...] alike)."""
    return [t.detach().reshape(members, -1) for t in tensors]


def member_sq_norms(tensors: Sequence[Tensor], members: int) -> Tensor:
    """Squared joint norm of each member's part of `tensors`: [K]."""
    return _total([v.square().sum(1) for v in views(tensors, members)])


def member_norms(tensors: Sequence[Tensor], members: int) -> Tensor:
    """Joint L2 norm of each member's part of `tensors`: [K]."""
    return member_sq_norms(tensors, members).sqrt()


def layer_norms(tensors: Sequence[Tensor], members: int) -> Tensor:
    """Norm of each tensor for each member: [n_tensors, K]."""
    return torch.stack([v.norm(dim=1) for v in views(tensors, members)])


def member_angles(a: Sequence[Tensor], b: Sequence[Tensor], members: int) -> Tensor:
    """Angle of each member between two packed vectors [K] in radians, by the stable formula
    2 atan2(||a|b| - b|a|||, ||a|b| + b|a|||): accurate for tiny angles too (the arccos of the
    cosine loses all digits below ~1e-4 rad in float32, the size of a per-step update); 0 when
    either vector is zero."""
    va, vb = views(a, members), views(b, members)
    na, nb = member_norms(a, members), member_norms(b, members)
    sa = [x * nb.unsqueeze(1) for x in va]
    sb = [x * na.unsqueeze(1) for x in vb]
    diff = _total([(x - y).square().sum(1) for x, y in zip(sa, sb)]).sqrt()
    total = _total([(x + y).square().sum(1) for x, y in zip(sa, sb)]).sqrt()
    return 2.0 * torch.atan2(diff, total)


class Welford:
    """Weighted streaming mean of K members' list-of-tensor samples (packed like `like`) and,
    per member, the trace of their covariance: mean += (w / W) delta, m2 += w (1 - w / W)
    ||delta||^2 (exact weighted Welford)."""

    def __init__(self, like: Sequence[Tensor], members: int = 1) -> None:
        self.mean = [torch.zeros_like(t) for t in like]
        self.m2 = torch.zeros(members, dtype=torch.float64, device=like[0].device)
        self.members, self.weight = members, 0.0

    def add(self, sample: Sequence[Tensor], weight: float) -> None:
        self.weight += weight
        frac = weight / self.weight
        delta = torch._foreach_sub(list(sample), self.mean)
        torch._foreach_add_(self.mean, delta, alpha=frac)
        self.m2 += (weight * (1.0 - frac) * member_sq_norms(delta, self.members)).double()

    def variance(self) -> Tensor:
        """[K] weighted variance of the samples around their mean."""
        return self.m2 / self.weight
