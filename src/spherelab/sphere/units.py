"""Sphere units of (packed) tensors for SphereSGD: per-member, per-tensor and per-filter views,
their squared norms, radii as tensors, and the checks of given ELRs and radii.

A tensor may pack K members along dim 0 (see spherelab.ensemble); a sphere unit is one member's
part of a tensor (``global`` / ``per_tensor`` spheres) or one output filter of it
(``per_filter``). Views work in any memory format (channels_last too).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


def measure_radius(params: list[Tensor], k: int, sphere: str) -> float | list[Any]:
    per_tensor = [sq_norms(p, k, "per_tensor").sqrt() for p in params]
    if sphere == "global":
        joint = torch.stack(per_tensor).square().sum(0).sqrt()
        return joint.item() if k == 1 else joint.tolist()
    return [n.item() if k == 1 else n.tolist() for n in per_tensor]


def as_member_tensor(value: float | Sequence[float], like: Tensor) -> Tensor:
    return torch.as_tensor(value, dtype=like.dtype, device=like.device).reshape(-1)


def member_rows(tensors: list[Tensor], k: int) -> list[Tensor] | None:
    """[K, -1] views of packed tensors, or None when one is not contiguous (channels_last)."""
    if not all(t.is_contiguous() for t in tensors):
        return None
    return [t.view(k, -1) for t in tensors]


def unit_view(p: Tensor, k: int, sphere: str) -> tuple[Tensor, int]:
    """p as a view [K, (filters,) rest...] in any memory format (channels_last too), and the
    number of leading dims that index sphere units (1: per member/tensor, 2: per filter)."""
    lead = 2 if sphere == "per_filter" and p.dim() >= 2 else 1
    return p.unflatten(0, (k, -1)), lead


def reduce_units(x: Tensor, lead: int) -> Tensor:
    """Sum over everything but the unit dims."""
    return x.sum(dim=tuple(range(lead, x.dim()))) if x.dim() > lead else x


def spread(t: Tensor, like: Tensor) -> Tensor:
    """Append singleton dims so a per-unit value broadcasts over a unit view."""
    return t.reshape(t.shape + (1,) * (like.dim() - t.dim()))


def sq_norms(p: Tensor, k: int, sphere: str) -> Tensor:
    view, lead = unit_view(p, k, sphere)
    return reduce_units(view.square(), lead)


def check_elr(elr: float | Sequence[float] | Tensor) -> None:
    values = elr.reshape(-1).tolist() if isinstance(elr, Tensor) else elr
    for v in values if isinstance(values, Sequence) else [values]:
        if not float(v) > 0.0:
            raise ValueError(f"elr={v} must be > 0 (the effective learning rate, e.g. 1e-3)")


def count_values(values: Sequence[float] | Tensor) -> int:
    return values.numel() if isinstance(values, Tensor) else len(values)


def check_radius(radius: Any) -> None:
    """A given radius (after given_radius): a positive number, or one per member / tensor."""
    if radius is None:
        return
    flat = radius if isinstance(radius, list) else [radius]
    for v in flat:
        inner = v if isinstance(v, (list, tuple)) else [v]
        if not all(isinstance(x, (int, float)) and x > 0 for x in inner):
            raise ValueError(
                f"radius={radius!r} must be a positive number (or one per member "
                "or tensor); leave it None to use the norm at construction"
            )


def given_radius(radius: Any, sphere: str, k: int, n_params: int) -> Any:
    """A given radius as a number or list (tuples and tensors become lists), its length checked:
    one per member on a global sphere with K > 1, one per tensor on per_tensor spheres."""
    if isinstance(radius, Tensor):
        radius = radius.tolist()
    if isinstance(radius, tuple):
        radius = list(radius)
    if not isinstance(radius, list):
        return radius
    want = {"global": k, "per_tensor": n_params}.get(sphere)
    if want == 1 and sphere == "global" and len(radius) != 1:
        raise ValueError(f"radius={radius} has {len(radius)} values for one sphere; pass a number")
    if want is not None and len(radius) != want:
        unit = "member" if sphere == "global" else "tensor"
        raise ValueError(
            f"radius={radius} has {len(radius)} values but the group needs one per {unit} "
            f"({want}); pass {want} values or one number"
        )
    return radius
