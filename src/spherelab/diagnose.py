"""Landscape diagnostics of a run: gradient statistics, geometry and curvature at its checkpoints.

`diagnose_run(run_dir)` walks the checkpoints of a finished (or running) run and appends one
JSON object per checkpoint to `diagnostics.jsonl`. `diagnose_point` is the shared core, also
called online by the engine when `train.diagnose` is set.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from spherelab.config import Config, load_json
from spherelab.io import append_jsonl, read_csv, read_json_dict, write_jsonl
from spherelab.metrics.curvature import hutchinson_trace, lanczos_topk, riemannian_topk
from spherelab.metrics.fisher import fisher_topk, fisher_trace
from spherelab.metrics.geometry import (
    AngularUpdateTracker,
    angle,
    cosine,
    elr_at_norm,
    equilibrium_angle,
    joint_norm,
    per_layer_angles,
)
from spherelab.metrics.gradients import gradient_stats
from spherelab.regimes import FINAL_STATUSES
from spherelab.train import RecordEvent, RecordHook, Run, build_run
from spherelab.train import checkpoints as ckpt
from spherelab.train.losses import get_loss
from spherelab.train.step import eager_step
from spherelab.train.tensorboard import TensorBoardHook

log = logging.getLogger("spherelab")
WHAT = ("grad", "angles", "curvature", "fisher")
DEFAULT_WHAT = ("grad", "angles", "curvature")


@dataclass(frozen=True)
class DiagnoseOptions:
    what: tuple[str, ...] = DEFAULT_WHAT
    samples: int = 1024  # training samples (fixed, first ones) used for the landscape
    batch_size: int = 128  # fixed batches of this size (BN in train mode)
    probes: int = 8  # Hutchinson probes (Gaussian probes for the Fisher trace)
    top_k: int = 5  # Lanczos eigenvalues
    iters: int = 20  # Lanczos iterations
    seed: int = 0  # probes and Lanczos start vector


def parse_what(text: str) -> tuple[str, ...]:
    items = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [t for t in items if t not in WHAT]
    if bad or not items:
        raise ValueError(f"--what {text!r}: unknown {bad or 'empty'}; use a comma list of {WHAT}")
    return items


def diagnose_point(
    run: Run, opts: DiagnoseOptions, step: int, prev: Sequence[torch.Tensor] | None = None
) -> dict[str, Any]:
    """All requested diagnostics of `run` (one run, spherelab.train.Run) at its current weights."""
    model, si = run.model, run.si_params
    loss_fn = get_loss(run.cfg.train.loss)
    batches = _landscape_batches(run, opts)
    out: dict[str, Any] = {
        "step": step,
        "epoch": step / run.sampler.steps_per_epoch,
        "elr": _elr_now(run),
    }
    if "grad" in opts.what:
        out |= {
            f"grad_{k}": v for k, v in gradient_stats(model, loss_fn, batches, si).as_dict().items()
        }
    if "angles" in opts.what:
        out |= _angles(run, prev)
    if "curvature" in opts.what:
        out |= _curvature(model, loss_fn, batches, si, opts)
    if "fisher" in opts.what:
        out |= _fisher(model, loss_fn, batches, si, opts)
    return out


def _elr_now(run: Run) -> float:
    cfg = run.cfg.optim
    if cfg.mode == "sphere":
        return cfg.elr
    return elr_at_norm(cfg.lr, float(joint_norm(run.si_params)))


def _landscape_batches(run: Run, opts: DiagnoseOptions) -> list[tuple[torch.Tensor, torch.Tensor]]:
    n = min(opts.samples, run.data.n_train)
    x, y = run.data.x_train[:n], run.data.y_train[:n]
    return [
        (x[i : i + opts.batch_size], y[i : i + opts.batch_size])
        for i in range(0, n, opts.batch_size)
    ]


def _angles(run: Run, prev: Sequence[torch.Tensor] | None) -> dict[str, Any]:
    si, names, init = run.si_params, run.si_names, run.init
    out: dict[str, Any] = {
        "angle_to_init": angle(si, init),
        "cos_to_init": cosine(si, init),
        "si_norm": float(joint_norm(si)),
    }
    if prev is not None:
        out["layer_angles"] = per_layer_angles(prev, si, names)
    lr = run.optimizer.param_groups[0].get("lr", math.nan)
    if run.cfg.optim.mode == "sphere":
        lr = run.cfg.optim.elr * float(joint_norm(si)) ** 2
    out["layer_elr"] = {n: elr_at_norm(lr, float(p.detach().norm())) for n, p in zip(names, si)}
    out |= _epoch_of_updates(run)
    if run.cfg.optim.mode == "conventional" and run.cfg.optim.weight_decay > 0:
        o = run.cfg.optim
        out["equilibrium_angle"] = equilibrium_angle(o.lr, o.weight_decay, o.momentum)
    return out


def _epoch_of_updates(run: Run) -> dict[str, float]:
    """Per-step angular updates over one epoch of training from here; the model, optimizer and
    batch order are restored afterwards, so the measurement leaves no trace."""
    saved = (
        copy.deepcopy(run.model.state_dict()),
        copy.deepcopy(run.optimizer.state_dict()),
        run.sampler.state_dict(),
    )
    tracker, si = AngularUpdateTracker(), run.si_params
    step = eager_step(run.model, run.optimizer, run.cfg.train.loss, packed=False)
    try:
        for idx in run.sampler.epoch_indices():
            before = [p.detach().clone() for p in si]
            step(run.data.x_train[idx], run.data.y_train[idx])
            tracker.update(before, si)
    finally:
        run.model.load_state_dict(saved[0])
        run.optimizer.load_state_dict(saved[1])
        run.sampler.load_state_dict(saved[2])
    s = tracker.summary()
    return {"step_angle_mean": s["mean"], "step_angle_max": s["max"]}


def _curvature(
    model: Any, loss_fn: Any, batches: list, si: list, opts: DiagnoseOptions
) -> dict[str, Any]:
    gen = torch.Generator(device=si[0].device).manual_seed(opts.seed)
    trace = hutchinson_trace(model, loss_fn, batches, si, n_probes=opts.probes, generator=gen)
    top = lanczos_topk(model, loss_fn, batches, si, k=opts.top_k, iters=opts.iters, generator=gen)
    riem = riemannian_topk(model, loss_fn, batches, si, k=1, iters=opts.iters, generator=gen)
    return {
        "trace": trace["trace"],
        "trace_per_param": trace["trace_per_param"],
        "effective_trace": trace["effective_trace"],
        "trace_stderr": trace["stderr"],
        "top_eigenvalues": top.eigenvalues,
        "effective_top_eigenvalues": top.effective_eigenvalues,
        "sharpness_eff": riem.effective_eigenvalues[0],
    }


def _fisher(
    model: Any, loss_fn: Any, batches: list, si: list, opts: DiagnoseOptions
) -> dict[str, Any]:
    """The paper's Fisher metrics (metrics.fisher): tr(F) / #params and top eigenvalues."""
    gen = torch.Generator(device=si[0].device).manual_seed(opts.seed)
    trace = fisher_trace(model, loss_fn, batches, si, n_probes=opts.probes, generator=gen)
    top = fisher_topk(model, loss_fn, batches, si, k=opts.top_k, iters=opts.iters, generator=gen)
    return {
        "fisher_trace_per_param": trace["trace_per_param"],
        "fisher_effective_trace_per_param": trace["effective_trace_per_param"],
        "fisher_top_eigenvalues": top.eigenvalues,
        "fisher_effective_top_eigenvalues": top.effective_eigenvalues,
    }


class OnlineDiagnostics:
    """A record hook for the training engine: diagnostics at every `train.diagnose_every`-th
    record of each run, appended to its diagnostics.jsonl (the run itself is left untouched)."""

    serves = "train.diagnose"  # the config setting this hook carries out

    def __init__(self, cfg: Config) -> None:
        self.opts = DiagnoseOptions(what=parse_what(cfg.train.diagnose))
        self.every = max(cfg.train.diagnose_every, 1)

    def __call__(self, event: RecordEvent) -> None:
        if event.index % self.every:
            return
        row = diagnose_point(event.run(), self.opts, event.step)
        append_jsonl(event.out / "diagnostics.jsonl", row)


def hooks_for(cfg: Config) -> list[RecordHook]:
    """The record hooks a config asks for (train.diagnose, train.log): pass them to train_run."""
    hooks: list[RecordHook] = [OnlineDiagnostics(cfg)] if cfg.train.diagnose else []
    if cfg.train.log == "tensorboard":
        hooks.append(TensorBoardHook())
    return hooks


def diagnose_run(
    run_dir: str | Path,
    opts: DiagnoseOptions = DiagnoseOptions(),
    epochs: Sequence[float] | None = None,
) -> Path:
    """Diagnostics at each checkpoint of a run (or those nearest the given epochs)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise ValueError(
            f"{run_dir} is not a run directory (no config.json); pass the --out "
            "of a `spherelab train` run"
        )
    if "monitor" in (read_json_dict(run_dir / "config.json") or {}):
        raise ValueError(
            f"{run_dir} was written by spherelab.monitor.RegimeMonitor around your own model: "
            "diagnose rebuilds zoo models from checkpoints and cannot; read it with "
            "`spherelab report SWEEP --lens RUN` or spherelab.studies.conventional.run_diagnostics"
        )
    paths = ckpt.list_checkpoints(run_dir)
    if not paths:
        raise ValueError(f"{run_dir} has no checkpoints; train with train.checkpoints=log")
    run = build_run(load_json(run_dir / "config.json"))
    run.init = ckpt.load_init(run_dir, run.device)
    paths = _select(paths, epochs, run.sampler.steps_per_epoch)
    out_path, prev = run_dir / "diagnostics.jsonl", None
    rows = []
    for path in paths:
        state = ckpt.load_checkpoint(path, run.device)
        run.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.sampler.load_state_dict(state["sampler"])  # the batch order the run had there
        rows.append(diagnose_point(run, opts, int(state["step"]), prev))
        prev = [p.detach().clone() for p in run.si_params]
        log.info("diagnosed %s step %d", run_dir, state["step"])
    write_jsonl(out_path, rows)
    return out_path


def diagnose_sweep(
    sweep_dir: str | Path,
    opts: DiagnoseOptions = DiagnoseOptions(),
    epochs: Sequence[float] | None = None,
) -> list[Path]:
    """Diagnose every finished run with checkpoints of a sweep (rows of summary.csv); returns
    the diagnostics files written. The caller redraws the report (``write_report``, as the CLI
    does) for it to gain the effective-sharpness vs 2/ELR figure."""
    sweep_dir = Path(sweep_dir)
    summary = sweep_dir / "summary.csv"
    if not summary.exists():
        raise ValueError(f"{sweep_dir} has no summary.csv; pass a sweep directory or a run")
    rows = [r for r in read_csv(summary) if r["status"] in FINAL_STATUSES]
    written = []
    for row in rows:
        run_dir = sweep_dir / row["run_dir"]
        if ckpt.list_checkpoints(run_dir):
            written.append(diagnose_run(run_dir, opts, epochs))
    return written


LAST = (math.inf,)  # `epochs=LAST` selects the final checkpoint only


def _select(paths: list[Path], epochs: Sequence[float] | None, spe: int) -> list[Path]:
    if not epochs:
        return paths
    if any(math.isinf(e) for e in epochs):
        return [paths[-1]]
    steps = [ckpt.checkpoint_step(p) for p in paths]
    chosen = {min(range(len(steps)), key=lambda i: abs(steps[i] - e * spe)) for e in epochs}
    return [paths[i] for i in sorted(chosen)]
