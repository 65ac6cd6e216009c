"""Member inputs of a packed module: member batches (or one shared batch) in its activation
layout (see modules.py). The per-member norms, angles and statistics are spherelab.metrics.packed."""

from __future__ import annotations

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
