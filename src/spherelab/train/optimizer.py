"""The optimizer of a single run's config (sphere or conventional) and its rate under a schedule."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from spherelab.config import OptimConfig
from spherelab.sphere.optim import SphereSGD
from spherelab.sphere.units import spread, sq_norms, unit_view

MODES = ("sphere", "conventional")
ELR_UNITS = ("sphere", "paper")
OTHERS_LR = ("own", "si")


def make_optimizer(
    cfg: OptimConfig, model: nn.Module, si: list[nn.Parameter]
) -> torch.optim.Optimizer:
    """Sphere mode: SphereSGD on the SI tensors, plain SGD (lr, weight decay) for any other
    trainable tensor (e.g. the affine norms and head of an *_af model). Conventional mode: SGD
    with lr, momentum and weight decay over every trainable tensor, no sphere.

    With ``elr_unit=paper`` and per-filter spheres, every SI filter is first rescaled to the
    root-mean-square filter norm, as the paper's per-filter mode does (no output changes: each
    filter is scale-invariant under its norm layer), and each filter's ELR is elr x filters."""
    if cfg.mode not in MODES:
        raise ValueError(f"optim.mode={cfg.mode!r} is unknown; use one of {MODES}")
    trainable = [p for p in model.parameters() if p.requires_grad]
    if cfg.mode == "conventional":
        if cfg.lr <= 0:
            raise ValueError(f"optim.lr={cfg.lr} must be > 0 in conventional mode")
        return torch.optim.SGD(
            trainable, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    if not si:
        raise ValueError(
            "the model has no scale-invariant parameters to put on the sphere; "
            "use a *_si model or optim.mode=conventional"
        )
    check_paper_units(cfg)
    if cfg.elr_unit == "paper" and cfg.sphere == "per_filter":
        equal_filter_norms(si)
    si_ids = {id(p) for p in si}
    groups: list[dict] = [{"params": si}]
    others = [p for p in trainable if id(p) not in si_ids]
    if others:
        groups.append(
            {"params": others, "sphere": "none", "lr": cfg.lr, "weight_decay": cfg.weight_decay}
        )
    opt = SphereSGD(
        groups,
        elr=cfg.elr * elr_scale(cfg, si),
        momentum=cfg.momentum,
        sphere=cfg.sphere,
        momentum_style=cfg.momentum_style,
        weight_decay=cfg.sphere_weight_decay,
    )
    set_rate(opt, cfg, 1.0)
    return opt


def check_paper_units(cfg: OptimConfig) -> None:
    """The paper has ELR units for a global sphere and for per-filter spheres only, and one
    SI learning rate for the other tensors to share only on those spheres."""
    if cfg.elr_unit not in ELR_UNITS:
        raise ValueError(f"optim.elr_unit={cfg.elr_unit!r} is unknown; use one of {ELR_UNITS}")
    if cfg.others_lr not in OTHERS_LR:
        raise ValueError(f"optim.others_lr={cfg.others_lr!r} is unknown; use one of {OTHERS_LR}")
    if cfg.elr_unit == "paper" and cfg.sphere == "per_tensor":
        raise ValueError(
            "optim.elr_unit=paper has no per_tensor unit in the paper; use optim.sphere=global "
            "or per_filter, or optim.elr_unit=sphere"
        )
    if cfg.others_lr == "si" and not (
        cfg.sphere == "global" or (cfg.sphere == "per_filter" and cfg.elr_unit == "paper")
    ):
        raise ValueError(
            f"optim.others_lr=si needs one SI learning rate, which optim.sphere={cfg.sphere} "
            "does not have; use optim.sphere=global, or per_filter with optim.elr_unit=paper"
        )


def filter_count(si: Sequence[Tensor]) -> int:
    """Number of per-filter spheres: output filters of tensors with >= 2 dims, 1-d tensors one."""
    return sum(p.shape[0] if p.dim() >= 2 else 1 for p in si)


def elr_scale(cfg: OptimConfig, si: Sequence[Tensor]) -> int:
    """Each sphere's ELR per unit of optim.elr: the number of filters for the paper's
    per-filter unit (its ELR e moves each filter as spherelab's per_filter ELR e x filters)."""
    return filter_count(si) if cfg.elr_unit == "paper" and cfg.sphere == "per_filter" else 1


@torch.no_grad()
def equal_filter_norms(si: Sequence[Tensor]) -> None:
    """Rescale every filter (as filter_count counts them) to the root-mean-square filter norm."""
    units = [sq_norms(p, 1, "per_filter") for p in si]
    rms = torch.cat([u.reshape(-1) for u in units]).mean().sqrt()
    for p, u in zip(si, units):
        view, _ = unit_view(p, 1, "per_filter")
        view.mul_(spread(rms / u.sqrt(), view))


def set_rate(opt: torch.optim.Optimizer, cfg: OptimConfig, factor: float) -> tuple[float, float]:
    """Apply the schedule factor; return (lr applied to the SI tensors, ELR).

    In sphere mode the ELR is the setting and lr = ELR * R^2 (NaN when the spheres are finer
    than global, unless the paper's per-filter unit puts them all at one radius); in
    conventional mode the ELR is measured later as lr / ||w_SI||^2 (NaN here). The ELR
    returned is in the configured unit (optim.elr_unit).
    """
    if cfg.mode == "conventional":
        for group in opt.param_groups:
            group["lr"] = cfg.lr * factor
        return cfg.lr * factor, math.nan
    elr = cfg.elr * factor
    si_group = opt.param_groups[0]
    per_sphere = elr * elr_scale(cfg, si_group["params"])
    si_group["elr"] = per_sphere
    lr = math.nan
    if isinstance(si_group["radius"], float):
        lr = per_sphere * si_group["radius"] ** 2
    elif cfg.elr_unit == "paper" and cfg.sphere == "per_filter":
        lr = elr * _total_sq(opt, si_group)
    for group in opt.param_groups[1:]:
        group["lr"] = lr if cfg.others_lr == "si" else cfg.lr * factor
    return lr, elr


def _total_sq(opt: torch.optim.Optimizer, group: dict) -> float:
    """Sum of the squared per-filter radii (the paper's lr per unit of its per-filter ELR)."""
    return float(sum(opt.state[p]["filter_radius"].square().sum().item() for p in group["params"]))
