"""Per-member math on packed tensors: inputs in member layout, per-member norms and angles.

A packed tensor holds member k in block k of dim 0 (see modules.py); ``views`` are the [K, -1]
flattenings of such tensors. Everything returns [K] tensors on the device, without a host sync.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def member_inputs(x: Tensor, layout: str) -> Tensor:
    """Member batches [K, B, ...] -> the ensemble's input in its activation layout (see
    modules.py): [B, K*C, ...] (``channels``) or flattened samples [K, F, B] (``features``)."""
    k, b = x.shape[:2]
    if layout == "features":
        return x.reshape(k, b, -1).transpose(1, 2).contiguous()
    return x.transpose(0, 1).reshape(b, k * x.shape[2], *x.shape[3:])


def shared_inputs(x: Tensor, members: int, layout: str) -> Tensor:
    """One batch [B, ...] fed to every member -> the ensemble's input."""
    return member_inputs(x.unsqueeze(0).expand(members, *x.shape), layout)


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
    """Angle of each member between two packed vectors [K], by the same stable formula as
    metrics.geometry.angle_tensor: 2 atan2(||a|b| - b|a|||, ||a|b| + b|a|||)."""
    va, vb = views(a, members), views(b, members)
    na, nb = member_norms(a, members), member_norms(b, members)
    sa = [x * nb.unsqueeze(1) for x in va]
    sb = [x * na.unsqueeze(1) for x in vb]
    diff = _total([(x - y).square().sum(1) for x, y in zip(sa, sb)]).sqrt()
    total = _total([(x + y).square().sum(1) for x, y in zip(sa, sb)]).sqrt()
    return 2.0 * torch.atan2(diff, total)
