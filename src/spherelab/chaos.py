"""The chaos meter: the maximal Lyapunov exponent of SGD on the sphere along one batch sequence.

One step of a run on a global sphere of radius R (SphereSGD, momentum 0) is the map

    w <- R y / |y|,    y = w - lr grad L_B(w),    lr = ELR R^2,

with BatchNorm in train mode and the batch B fixed by the run's own sampler. Its derivative
along a tangent vector v is

    v <- (R / |y|) (I - y y^T / |y|^2) (v - lr H_B v),

one Hessian-vector product (double backward through the batch loss, BN coupling included)
plus the retraction's derivative. ``tangent_trace`` pushes ``probes`` tangent vectors through
it and renormalises them every step (Benettin): the mean of log |v_t| / |v_(t-1)| is the
maximal Lyapunov exponent per step (natural log). ``twin_trace`` is the cheap estimator: a
copy of the run started a tiny angle away, stepped on the same batches and pulled back to that
angle every ``renorm_every`` steps. ``estimate`` turns either trace into a value and a 1-sigma
error (the scatter of time-window means over windows and probes). Docs: docs/chaos.md.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from spherelab.config import load_json
from spherelab.io import read_csv, read_json_dict, write_csv, write_json
from spherelab.metrics.state import dot
from spherelab.regimes import FINAL_STATUSES
from spherelab.train import Run, build_run
from spherelab.train import checkpoints as ckpt
from spherelab.train.losses import batch_loss
from spherelab.train.run_files import relabelled_summary

log = logging.getLogger("spherelab")

METHODS = ("tangent", "twin")
Batch = Any  # whatever loss_of takes: (x, y) for a run
LossOf = Callable[[Batch], Tensor]
# The twins' starting angle (radians). Both estimators step float64 copies of a run: then the
# angle can be tiny (rounding noise of a step ~1e-16 |w|) and the twins almost never straddle a
# ReLU kink (a float32 pair at 1e-4 rad straddles a few per step, and each flip adds a jump the
# tangent map does not have), and the tangent map's Hessian-vector products are exact enough
# (in float32 it read 0.05 where float64 reads 0.08 per step on the demo model at ELR 1e-2).
TWIN_ANGLE = 1e-8
DTYPES = {"float64": torch.float64, "float32": torch.float32}


@dataclass(frozen=True)
class LyapunovOptions:
    """How λ is measured from a run's checkpoint (its own batch order from there)."""

    method: str = "tangent"  # tangent (the reference) | twin
    steps: int = 200  # measured steps after the burn-in
    burn_in: int = 50  # steps that align the tangent vector; not counted
    probes: int = 1  # tangent vectors (or twins) from independent random starts
    windows: int = 4  # time windows per probe for the error bar
    twin_angle: float = TWIN_ANGLE  # radians
    renorm_every: int = 1  # twin: steps between renormalisations
    seed: int = 0  # the random starting vectors
    dtype: str = "float64"  # the copies that are stepped: float64 | float32 (faster, cruder)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"lyapunov method={self.method!r} is unknown; use one of {METHODS}")
        for name in ("steps", "probes", "windows", "renorm_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"lyapunov {name}={getattr(self, name)} must be >= 1")
        if self.burn_in < 0 or self.twin_angle <= 0:
            raise ValueError(
                f"lyapunov burn_in={self.burn_in}, twin_angle={self.twin_angle}: use burn_in >= 0 "
                "and twin_angle > 0"
            )
        if self.dtype not in DTYPES:
            raise ValueError(f"lyapunov dtype={self.dtype!r} is unknown; use one of {list(DTYPES)}")
        if self.steps < self.windows * self.renorm_every:
            raise ValueError(
                f"lyapunov steps={self.steps} is too short for {self.windows} windows of "
                f"{self.renorm_every}-step renormalisations; raise steps"
            )


@dataclass(frozen=True)
class Trace:
    """Per-step log growth of each probe (probes x steps; NaN where a twin was not renormalised)
    and the angle of each base step (radians)."""

    log_growth: Tensor
    step_angles: Tensor


@dataclass(frozen=True)
class Estimate:
    lyapunov: float  # per step, natural log
    err: float  # 1 sigma: std of the window means / sqrt(their number)
    step_angle: float  # mean angle of one step (radians): ~pi/2 in regime 3
    windows: list[float]  # the window means, probe by probe

    def as_dict(self) -> dict[str, Any]:
        return {
            "lyapunov": self.lyapunov,
            "lyapunov_err": self.err,
            "step_angle_mean": self.step_angle,
        }


def check_supported(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The SI group of a SphereSGD on one global sphere with no momentum, weight decay or other
    trainable tensors: the map this module differentiates. Anything else is refused."""
    groups = optimizer.param_groups
    group = groups[0]
    problems = []
    if "sphere" not in group:
        problems.append("optim.mode=conventional (no sphere)")
    else:
        if group["sphere"] != "global":
            problems.append(f"optim.sphere={group['sphere']}")
        if group["momentum"] != 0.0:
            problems.append(f"optim.momentum={group['momentum']}")
        if group["weight_decay"] != 0.0:
            problems.append(f"optim.sphere_weight_decay={group['weight_decay']}")
        if group["members"] != 1:
            problems.append(f"members={group['members']} (a packed module)")
    if any(p.requires_grad for g in groups[1:] for p in g["params"]):
        problems.append("trainable tensors off the sphere (an *_af model)")
    if problems:
        raise ValueError(
            "the Lyapunov exponent supports SGD on one global sphere without momentum or weight "
            f"decay, and nothing trainable off it; this run has {', '.join(problems)}"
        )
    return group


def _rate(group: dict[str, Any]) -> float:
    """lr = ELR R^2 of the SI group (its radius is a float for one run on a global sphere)."""
    return float(group["elr"]) * float(group["radius"]) ** 2


def _random_tangent(
    w: Sequence[Tensor], gen: torch.Generator, start: Sequence[Tensor] | None
) -> list[Tensor]:
    """A unit tangent vector at w: `start` (or a Gaussian one) minus its radial part."""
    v = (
        [s.detach().clone().to(p) for s, p in zip(start, w)]
        if start is not None
        else [torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device) for p in w]
    )
    v = _tangent(v, w)
    return _scaled(v, 1.0 / float(_norm(v)))


def _norm(v: Sequence[Tensor]) -> Tensor:
    return torch.sqrt(dot(v, v))


def _tangent(v: Sequence[Tensor], w: Sequence[Tensor]) -> list[Tensor]:
    """v minus its component along w."""
    c = dot(v, w) / dot(w, w)
    return [a - c * b for a, b in zip(v, w)]


def _scaled(v: Sequence[Tensor], s: float | Tensor) -> list[Tensor]:
    return [a * s for a in v]


def _angle(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """The angle between a and b in float64 from the chord |a/|a| - b/|b||: accurate for tiny
    angles, where arccos of a float32 cosine rounds to 0."""
    a64, b64 = [t.double() for t in a], [t.double() for t in b]
    na, nb = _norm(a64), _norm(b64)
    chord = _norm([x / na - y / nb for x, y in zip(a64, b64)])
    return 2.0 * torch.asin((chord / 2.0).clamp(max=1.0))


def tangent_trace(
    loss_of: LossOf,
    params: Sequence[Tensor],
    optimizer: torch.optim.Optimizer,
    batches: Iterable[Batch],
    steps: int,
    *,
    probes: int = 1,
    generator: torch.Generator | None = None,
    start: Sequence[Sequence[Tensor]] | None = None,
) -> Trace:
    """Step the run on `steps` batches with its own optimizer and push `probes` tangent vectors
    through the exact Jacobian of each step (Benettin: renormalised every step).

    loss_of(batch) is the batch loss at the current params (model in the mode the run trains
    in); `start` gives each probe's first vector (projected on the tangent space), else they
    are Gaussian from `generator`."""
    group = check_supported(optimizer)
    params = list(params)
    gen = generator or torch.Generator().manual_seed(0)
    w0 = [p.detach() for p in params]
    vs = [_random_tangent(w0, gen, None if start is None else start[i]) for i in range(probes)]
    growth = torch.empty(probes, steps, dtype=torch.float64)
    angles = torch.empty(steps, dtype=torch.float64)
    for t, batch in zip(range(steps), batches):
        lr, radius = _rate(group), float(group["radius"])
        before = [p.detach().clone() for p in params]
        with torch.enable_grad():
            g = torch.autograd.grad(loss_of(batch), params, create_graph=True)
            hvs = [
                torch.autograd.grad(dot(g, v), params, retain_graph=i < probes - 1)
                for i, v in enumerate(vs)
            ]
        y = [w - lr * gi.detach() for w, gi in zip(before, g)]
        y_norm = _norm(y)
        for i, (v, hv) in enumerate(zip(vs, hvs)):
            dy = [a - lr * b for a, b in zip(v, hv)]
            dw = _scaled(_tangent(dy, y), radius / y_norm)
            size = _norm(dw)
            growth[i, t] = torch.log(size).double()
            vs[i] = _scaled(dw, 1.0 / size)
        for p, gi in zip(params, g):
            p.grad = gi.detach()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        angles[t] = _angle(before, [p.detach() for p in params]).double()
    return Trace(growth, angles)


def twin_trace(
    step_fn: Callable[[nn.Module, torch.optim.Optimizer, Batch], None],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    params_of: Callable[[nn.Module], list[Tensor]],
    batches: Iterable[Batch],
    steps: int,
    *,
    angle: float,
    renorm_every: int = 1,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> Trace:
    """The twin estimator: copies of (model, optimizer) in `dtype`, the base and its twin
    started `angle` radians away along a random tangent direction, both stepped by step_fn on
    the same batches; every `renorm_every` steps the log growth of the angle is recorded
    (spread evenly over those steps) and the twin is pulled back to `angle` along its current
    direction. The caller's model and optimizer are not stepped."""
    check_supported(optimizer)
    gen = generator or torch.Generator().manual_seed(0)
    pair = [copy_in(model, optimizer, params_of, dtype) for _ in range(2)]
    (base, base_opt), (twin, twin_opt) = pair
    w, u = params_of(base), params_of(twin)
    _place_twin(w, u, _random_tangent([p.detach() for p in w], gen, None), angle)
    growth = torch.full((1, steps), math.nan, dtype=torch.float64)
    angles = torch.empty(steps, dtype=torch.float64)
    for t, batch in zip(range(steps), batches):
        before = [p.detach().clone() for p in w]
        step_fn(base, base_opt, batch)
        step_fn(twin, twin_opt, batch)
        angles[t] = _angle(before, [p.detach() for p in w])
        if (t + 1) % renorm_every == 0:
            apart = float(_angle([p.detach() for p in w], [p.detach() for p in u]))
            growth[0, t + 1 - renorm_every : t + 1] = math.log(apart / angle) / renorm_every
            wd = [p.detach() for p in w]
            diff = _tangent([b.detach() - a for a, b in zip(wd, u)], wd)
            _place_twin(w, u, _scaled(diff, 1.0 / float(_norm(diff))), angle)
    return Trace(growth, angles)


def copy_in(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    params_of: Callable[[nn.Module], list[Tensor]],
    dtype: torch.dtype,
) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A deep copy of the model in `dtype` and of the optimizer, stepping the copy's tensors."""
    twin, twin_opt = copy.deepcopy(model).to(dtype), copy.deepcopy(optimizer)
    twin_opt.param_groups[0]["params"] = params_of(twin)
    return twin, twin_opt


@torch.no_grad()
def _place_twin(
    w: Sequence[Tensor], u: Sequence[Tensor], v: Sequence[Tensor], angle: float
) -> None:
    """u <- the point `angle` radians from w along the unit tangent v, on w's sphere."""
    radius = _norm(w)
    for a, b, c in zip(w, u, v):
        b.copy_(math.cos(angle) * a + math.sin(angle) * radius * c)


def estimate(trace: Trace, windows: int) -> Estimate:
    """λ and its error from a trace: each probe's steps split into `windows` windows; the value
    is the mean of all window means, the error their standard deviation / sqrt(count)."""
    means = []
    for row in trace.log_growth:
        for part in torch.tensor_split(row, windows):
            part = part[~torch.isnan(part)]
            if part.numel():
                means.append(float(part.mean()))
    values = torch.tensor(means, dtype=torch.float64)
    err = float(values.std() / math.sqrt(len(means))) if len(means) > 1 else math.nan
    return Estimate(float(values.mean()), err, float(trace.step_angles.mean()), means)


# ------------------------------------------------------------------ runs and their checkpoints
def run_batches(run: Run) -> Iterator[tuple[Tensor, Tensor]]:
    """The run's own batches from its sampler's current state, epoch after epoch (no data
    augmentation: the measurement follows the plain batch sequence)."""
    x, y = run.data.x_train, run.data.y_train
    while True:
        for idx in run.sampler.epoch_indices():
            yield x[idx], y[idx]


def params_getter(names: Sequence[str]) -> Callable[[nn.Module], list[Tensor]]:
    def params_of(model: nn.Module) -> list[Tensor]:
        named = dict(model.named_parameters())
        return [named[n] for n in names]

    return params_of


def training_step(loss: str) -> Callable[[nn.Module, torch.optim.Optimizer, Batch], None]:
    """One training step of a model on a batch, the inputs cast to the model's dtype."""

    def step(model: nn.Module, opt: torch.optim.Optimizer, batch: tuple[Tensor, Tensor]) -> None:
        x = batch[0].to(next(model.parameters()).dtype)
        opt.zero_grad(set_to_none=True)
        batch_loss(model(x), batch[1], loss).backward()
        opt.step()

    return step


def measure_run(run: Run, opts: LyapunovOptions = LyapunovOptions()) -> Estimate:
    """λ of a run from its current state (model, optimizer, sampler: e.g. a checkpoint's) along
    its own next burn_in + steps batches. Both methods step copies of the model in opts.dtype
    (default float64: a float32 tangent map reads low, docs/chaos.md); the run itself is left
    as it was."""
    check_supported(run.optimizer)
    saved = run.sampler.state_dict()
    gen = torch.Generator().manual_seed(opts.seed)
    params_of = params_getter(run.si_names)
    traces = []
    mode = run.model.training
    run.model.train()
    try:
        for _ in range(opts.probes if opts.method == "twin" else 1):
            run.sampler.load_state_dict(saved)
            traces.append(_one_trace(run, opts, gen, params_of))
    finally:
        run.sampler.load_state_dict(saved)
        run.model.train(mode)
    growth = torch.cat([t.log_growth[:, opts.burn_in :] for t in traces])
    angles = torch.cat([t.step_angles[opts.burn_in :] for t in traces])
    return estimate(Trace(growth, angles), opts.windows)


def _one_trace(
    run: Run,
    opts: LyapunovOptions,
    gen: torch.Generator,
    params_of: Callable[[nn.Module], list[Tensor]],
) -> Trace:
    total, loss = opts.burn_in + opts.steps, run.cfg.train.loss
    batches, dtype = run_batches(run), DTYPES[opts.dtype]
    if opts.method == "twin":
        return twin_trace(
            training_step(loss), run.model, run.optimizer, params_of, batches, total,
            angle=opts.twin_angle, renorm_every=opts.renorm_every, generator=gen, dtype=dtype,
        )  # fmt: skip
    model, opt = copy_in(run.model, run.optimizer, params_of, dtype)

    def loss_of(batch: tuple[Tensor, Tensor]) -> Tensor:
        return batch_loss(model(batch[0].to(dtype)), batch[1], loss)

    return tangent_trace(
        loss_of, params_of(model), opt, batches, total, probes=opts.probes, generator=gen
    )


# ------------------------------------------------------------------ run and sweep directories
SUMMARY_KEYS = ("lyapunov", "lyapunov_err", "step_angle_mean")


def lyapunov_run(run_dir: str | Path, opts: LyapunovOptions = LyapunovOptions()) -> dict[str, Any]:
    """λ of a finished run from its final checkpoint (model, optimizer and the sampler's batch
    order there), written into its summary.json under SUMMARY_KEYS (plus the options used),
    relabelled with λ's vote (run_files.relabelled_summary); returns the new summary."""
    run_dir = Path(run_dir)
    summary = read_json_dict(run_dir / "summary.json")
    paths = ckpt.list_checkpoints(run_dir)
    if summary is None or not paths:
        raise ValueError(
            f"{run_dir} has no summary.json or no checkpoints; measure λ of a finished run "
            "trained with checkpoints (train.checkpoints=log)"
        )
    run = build_run(load_json(run_dir / "config.json"))
    state = ckpt.load_checkpoint(paths[-1], run.device)
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.sampler.load_state_dict(state["sampler"])
    est = measure_run(run, opts)
    summary |= est.as_dict() | {
        "lyapunov_options": asdict(opts) | {"from_step": int(state["step"])}
    }
    summary = relabelled_summary(run_dir, summary)  # λ votes in the label
    write_json(run_dir / "summary.json", summary)
    log.info("λ of %s: %.4g ± %.2g per step", run_dir, est.lyapunov, est.err)
    return summary


def _measured_with(summary: dict[str, Any], opts: LyapunovOptions) -> bool:
    used = dict(summary.get("lyapunov_options") or {})
    used.pop("from_step", None)
    return "lyapunov" in summary and used == asdict(opts)


def lyapunov_sweep(sweep_dir: str | Path, opts: LyapunovOptions = LyapunovOptions()) -> Path:
    """λ of every finished run of a sweep that has checkpoints (lyapunov_run; a run measured
    before with the same options is kept), and the SUMMARY_KEYS columns of summary.csv; returns
    its path."""
    out = Path(sweep_dir)
    if not (out / "summary.csv").exists():
        raise ValueError(f"{out} has no summary.csv; pass a sweep directory or a run")
    rows = read_csv(out / "summary.csv")
    for row in rows:
        run_dir = out / row["run_dir"]
        values = read_json_dict(run_dir / "summary.json") or {}
        if _measured_with(values, opts):
            pass  # measured before with the same options: kept
        elif row["status"] in FINAL_STATUSES and ckpt.list_checkpoints(run_dir):
            values = lyapunov_run(run_dir, opts)
        row.update({k: "" if values.get(k) is None else str(values[k]) for k in SUMMARY_KEYS})
        if values.get("regime"):
            row["regime"] = values["regime"]  # λ votes in the label
    write_csv(out / "summary.csv", rows, list(rows[0]))
    return out / "summary.csv"
