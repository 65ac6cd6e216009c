"""Training-algorithm parity: the paper's update rule, run by its own code, against spherelab's
optimizer, loss, schedules and ghost-batch step, on the paper's own network, in float64.

Each check is a small official ConvNetSI (width 2, depth 3) trained for 50 optimizer steps on
20 random 32x32 images (batches of 4), once by the official training functions (their SGD set-up, their
`train_epoch`, norm fixing and schedules, in the order their `train.py` runs them) and once by
spherelab (`make_optimizer`, `set_rate`, `make_schedule`, `eager_step` / `ghost_step`) from the
same initial weights. Both sides record all parameters after every epoch.

`spherelab_run(check)` needs only spherelab; `official_run(check, modules)` needs the paper's
code (tests/_official.py loads it). `probes(trajectory)` reduces a trajectory to a few numbers
per record, which the fixture tests/fixtures/parity/training.json holds.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch
from _official import cuda_noop
from torch import Tensor, nn

from spherelab.config import OptimConfig
from spherelab.sphere import si_parameters
from spherelab.train.optimizer import make_optimizer, set_rate
from spherelab.train.schedules import make_schedule
from spherelab.train.step import eager_step, ghost_step

N_SAMPLES, BATCH, WIDTH, CLASSES = 20, 4, 2, 10
OFFICIAL_NAME = "ConvNetSI"


@dataclass(frozen=True)
class Check:
    """One parity check: the official flags and the spherelab settings that should equal them."""

    name: str
    official: dict[str, Any]  # flags of the paper's train.py (names without dashes)
    optim: dict[str, Any]  # spherelab OptimConfig fields
    loss: str = "cross_entropy"  # spherelab train.loss
    ghost: bool = False  # the paper's --fbgd; spherelab data.batch_size=0, train.ghost_batch
    epochs: int = 10  # 5 steps per epoch (one with --fbgd)


_G = {"fix_elr": True, "elr": 3e-4, "noninvlr": 0.0}  # a convergence ELR for this net
_F = {"fix_all_elr": True, "elr": 1e-4, "noninvlr": 0.0}
_SG = {"sphere": "global", "elr": 3e-4, "lr": 0.0, "momentum_style": "paper"}
_SF = {"sphere": "per_filter", "elr": 1e-4, "lr": 0.0, "momentum_style": "paper",
       "elr_unit": "paper"}  # fmt: skip

CHECKS = [
    Check("global_momentum0", {**_G, "momentum": 0.0}, {**_SG}),
    Check("global_momentum0.9", {**_G, "momentum": 0.9}, {**_SG, "momentum": 0.9}),
    Check("per_filter_momentum0", {**_F, "momentum": 0.0}, {**_SF}),
    Check("per_filter_momentum0.9", {**_F, "momentum": 0.9}, {**_SF, "momentum": 0.9}),
    Check(
        "squared_loss", {**_G, "momentum": 0.0, "use_squared_loss": True}, {**_SG},
        loss="mse_class_mean",
    ),
    Check(
        "weight_decay_trained_head_momentum0.9",
        {**_G, "momentum": 0.9, "wd": 5e-3, "noninvlr": -1.0},
        {**_SG, "momentum": 0.9, "sphere_weight_decay": 5e-3, "weight_decay": 5e-3,
         "others_lr": "si"},
    ),
    Check(
        "noninvlr_momentum0.9",
        {**_G, "momentum": 0.9, "noninvlr": 0.05},
        {**_SG, "momentum": 0.9, "lr": 0.05},
    ),
    Check(
        "c_schedule", {**_G, "momentum": 0.0, "c_schedule": 10.0},
        {**_SG, "schedule": "linear_decay", "schedule_factors": (0.1,)},
    ),
    Check(
        "cosine_schedule", {**_G, "momentum": 0.0, "cosan_schedule": True},
        {**_SG, "schedule": "cosine_epoch"},
    ),
    Check(
        "full_batch_ghost_bn", {**_G, "momentum": 0.0, "fbgd": True}, {**_SG},
        ghost=True, epochs=50,
    ),
]  # fmt: skip


def data() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N_SAMPLES, 3, 32, 32, generator=g, dtype=torch.float64)
    return x, torch.randint(0, CLASSES, (N_SAMPLES,), generator=g)


def official_model(modules: dict[str, ModuleType]) -> nn.Module:
    """The official ConvNetSI as its train.py builds it at seed 1, in float64."""
    torch.manual_seed(1)
    net = modules["nets"].ConvNetSI.base(
        num_classes=CLASSES, init_channels=WIDTH, max_depth=3, init_scale=10.0
    )
    return net.double()


class PaperConvNet(nn.Module):
    """The paper's ConvNet-SI at depth 3 (the network spherelab's convnet_si follows, with the
    paper's trainable head with bias), its parameters created in the paper's order and under
    the paper's names, so that seed 1 draws the official initial weights without its code."""

    def __init__(self, c: int = WIDTH) -> None:
        super().__init__()

        def block(cin: int, cout: int, pool: bool) -> list[nn.Module]:
            layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False)]
            layers += [nn.BatchNorm2d(cout, affine=False), nn.ReLU()]
            return layers + ([nn.MaxPool2d(2)] if pool else [])

        layers = block(3, c, False) + block(c, 2 * c, True)
        layers += block(2 * c, 4 * c, True) + block(4 * c, 8 * c, True)
        self.conv_layers = nn.Sequential(*layers)
        head = nn.Linear(8 * c, CLASSES)
        with torch.no_grad():
            head.weight.copy_(10.0 * head.weight / head.weight.norm())  # in float32, as built
        self.linear_layers = nn.Sequential(nn.MaxPool2d(4), nn.Flatten(), head)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_layers(self.conv_layers(x))


def initial_model() -> nn.Module:
    """PaperConvNet at seed 1 in float64: the official initial weights (the live test checks)."""
    torch.manual_seed(1)
    return PaperConvNet().double()


def flat(model: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()


# ------------------------------------------------------------------------------- spherelab
def spherelab_run(check: Check, model: nn.Module) -> list[Tensor]:
    """Train a copy of `model` with spherelab; all parameters after every epoch (and at 0)."""
    model = copy.deepcopy(model)
    x, y = data()
    cfg = OptimConfig(**check.optim)
    opt = make_optimizer(cfg, model, si_parameters(model))
    schedule = make_schedule(
        cfg.schedule, check.epochs, cfg.schedule_milestones, cfg.schedule_factors
    )
    if check.ghost:
        batches = [(x, y)]
        step = ghost_step(model, opt, check.loss, BATCH)
    else:
        batches = [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, N_SAMPLES, BATCH)]
        step = eager_step(model, opt, check.loss, packed=False)
    model.train()
    out = [flat(model)]
    for epoch in range(check.epochs):
        set_rate(opt, cfg, schedule(float(epoch)))
        for xb, yb in batches:
            step(xb, yb)
        out.append(flat(model))
    return out


# -------------------------------------------------------------------------------- official
def official_run(check: Check, model: nn.Module, modules: dict[str, ModuleType]) -> list[Tensor]:
    """Train a copy of `model` with the official functions, as the paper's train.py drives them
    (its optimizer set-up, schedules and per-epoch `training_utils.train_epoch`)."""
    tu, train = modules["training_utils"], modules["train"]
    model = copy.deepcopy(model)
    flags = {"momentum": 0.0, "wd": 0.0, "noninvlr": -1.0, "fix_elr": False,
             "fix_all_elr": False, "c_schedule": 0.0, "cosan_schedule": False,
             "use_squared_loss": False, "fbgd": False, **check.official}  # fmt: skip
    x, y = data()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=BATCH, shuffle=False
    )
    opt, lr_init, si_pnorm_0 = _official_optimizer(model, flags, tu)
    scheduler = None
    if flags["cosan_schedule"]:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=check.epochs)
    criterion = train.squared_loss if flags["use_squared_loss"] else train.cross_entropy
    end_epoch = check.epochs + 1  # train.py: epochs 1..E of end_epoch = E + 1
    out = [flat(model)]
    for epoch in range(1, check.epochs + 1):
        if not flags["cosan_schedule"]:
            lr = lr_init
            if flags["c_schedule"] > 0:
                lr = tu.c_schedule(epoch, lr_init, end_epoch, flags["c_schedule"])
            if flags["noninvlr"] >= 0:
                tu.adjust_learning_rate_only_conv(opt, lr)
            else:
                tu.adjust_learning_rate(opt, lr)
        with cuda_noop():
            tu.train_epoch(
                loader, model, criterion, opt, fbgd=flags["fbgd"], fix_elr=flags["fix_elr"],
                fix_all_elr=flags["fix_all_elr"], si_pnorm_0=si_pnorm_0, model_name=OFFICIAL_NAME,
            )  # fmt: skip
        if scheduler is not None:
            scheduler.step()
        out.append(flat(model))
    return out


def _official_optimizer(
    model: nn.Module, flags: dict[str, Any], tu: ModuleType
) -> tuple[torch.optim.Optimizer, float, float]:
    """The SGD, initial lr and SI norm that the paper's train.py sets up for these flags."""

    def group(si: bool) -> list[Tensor]:
        return [p for n, p in model.named_parameters() if tu.check_si_name(n, OFFICIAL_NAME) == si]

    with torch.no_grad():
        if flags["fix_elr"]:
            si_pnorm_0 = math.sqrt(sum((p**2).sum().item() for p in group(True)))
            lr = flags["elr"] * si_pnorm_0**2
        else:  # fix_all_elr: every filter to the RMS filter norm first
            sq = sum((p**2).sum().item() for p in group(True))
            si_pnorm_0 = math.sqrt(sq / sum(p.shape[0] for p in group(True)))
            tu.fix_si_pnorms(model, si_pnorm_0, OFFICIAL_NAME)
            lr = flags["elr"] * sum((p**2).sum().item() for p in group(True))
    groups: list[dict[str, Any]] = [{"params": group(True)}, {"params": group(False)}]
    if flags["noninvlr"] >= 0:
        groups[1]["lr"] = flags["noninvlr"]
    opt = torch.optim.SGD(groups, lr=lr, momentum=flags["momentum"], weight_decay=flags["wd"])
    return opt, lr, si_pnorm_0


# ---------------------------------------------------------------------------------- probes
def probe_vectors(n: int, count: int = 3) -> Tensor:
    """Fixed dense probes [count, n] with entries in [-1, 1] (no RNG: the same everywhere)."""
    i = torch.arange(n, dtype=torch.float64)
    return torch.stack([torch.sin((j + 1) * 0.7 * i + j) for j in range(count)])


def probes(trajectory: list[Tensor]) -> list[list[float]]:
    """Per record: the parameter vector's projections on the probes and its squared norm."""
    v = probe_vectors(trajectory[0].numel())
    return [(v @ t).tolist() + [float(t.square().sum())] for t in trajectory]


def max_abs_diff(a: list[Tensor], b: list[Tensor]) -> float:
    return max(float((s - t).abs().max()) for s, t in zip(a, b))
