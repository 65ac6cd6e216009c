"""The optimizer of a single run's config (sphere or conventional) and its rate under a schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from spherelab.config import OptimConfig
from spherelab.sphere.optim import SphereSGD

MODES = ("sphere", "conventional")


def make_optimizer(
    cfg: OptimConfig, model: nn.Module, si: list[nn.Parameter]
) -> torch.optim.Optimizer:
    """Sphere mode: SphereSGD on the SI tensors, plain SGD (lr, weight decay) for any other
    trainable tensor (e.g. the affine norms and head of an *_af model). Conventional mode: SGD
    with lr, momentum and weight decay over every trainable tensor, no sphere."""
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
    si_ids = {id(p) for p in si}
    groups: list[dict] = [{"params": si}]
    others = [p for p in trainable if id(p) not in si_ids]
    if others:
        groups.append(
            {"params": others, "sphere": "none", "lr": cfg.lr, "weight_decay": cfg.weight_decay}
        )
    return SphereSGD(groups, elr=cfg.elr, momentum=cfg.momentum, sphere=cfg.sphere)


def set_rate(opt: torch.optim.Optimizer, cfg: OptimConfig, factor: float) -> tuple[float, float]:
    """Apply the schedule factor; return (lr applied to the SI tensors, ELR).

    In sphere mode the ELR is the setting and lr = ELR * R^2 (NaN when the spheres are finer
    than global); in conventional mode the ELR is measured later as lr / ||w_SI||^2 (NaN here).
    """
    if cfg.mode == "conventional":
        for group in opt.param_groups:
            group["lr"] = cfg.lr * factor
        return cfg.lr * factor, math.nan
    elr = cfg.elr * factor
    lr = math.nan
    for group in opt.param_groups:
        if group["sphere"] == "none":
            group["lr"] = cfg.lr * factor
            continue
        group["elr"] = elr
        if isinstance(group["radius"], float):
            lr = elr * group["radius"] ** 2
    return lr, elr
