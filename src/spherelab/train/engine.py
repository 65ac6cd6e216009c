"""Train one run: build it from a Config, step it, record log-spaced metrics, checkpoint, resume.

The run directory contract (DESIGN.md §2): config.json, metrics.jsonl, summary.json,
checkpoints/. The sphere constraint lives in the optimizer; this loop never touches norms.
"""

from __future__ import annotations

import logging
import math
import pickle
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spherelab.config import Config
from spherelab.data.augment import augment_images
from spherelab.data.batching import BatchSampler, fixed_batches
from spherelab.data.load import Dataset, load_dataset
from spherelab.runtime import environment, resolve_device, resolve_dtype
from spherelab.train import checkpoints as ckpt
from spherelab.train import run_files as runfiles
from spherelab.train.losses import get_loss
from spherelab.train.optimizer import make_optimizer, set_rate, train_step
from spherelab.train.recorder import Recorder
from spherelab.train.schedules import make_schedule

log = logging.getLogger("spherelab")
ProgressFn = Callable[[dict[str, Any]], None]


@dataclass
class Run:
    """Everything a training run holds in memory."""

    cfg: Config
    device: torch.device
    model: nn.Module
    data: Dataset
    optimizer: torch.optim.Optimizer
    sampler: BatchSampler
    recorder: Recorder
    total_steps: int
    aug_gen: torch.Generator | None
    remaining: deque = field(default_factory=deque)  # batches left in the current epoch


def build_model_for(cfg: Config, data: Dataset) -> nn.Module:
    """The configured model, sized for the data set (channels / image size / features)."""
    from spherelab.models import build_model

    shape = data.input_shape
    kwargs: dict[str, Any] = dict(
        num_classes=data.num_classes,
        width=cfg.model.width,
        depth=cfg.model.depth,
        head_seed=cfg.model.head_seed,
        head_norm=cfg.model.head_norm,
        in_features=math.prod(shape),
    )
    if len(shape) == 3:  # conv families read these; the MLP flattens images
        kwargs.update(in_channels=shape[0], image_size=shape[1])
    return build_model(cfg.model.name, **kwargs)


def load_run_data(cfg: Config) -> tuple[torch.device, torch.dtype, Dataset]:
    """The device, dtype and in-memory data set of a config (shared by runs and ensembles)."""
    device, dtype = resolve_device(cfg.train.device), resolve_dtype(cfg.train.dtype)
    data = load_dataset(
        cfg.data.name,
        device=device,
        dtype=dtype,
        train_subset=cfg.data.train_subset,
        test_subset=cfg.data.test_subset,
        label_noise=cfg.data.label_noise,
        seed=cfg.train.seed,
        data_dir=cfg.data.data_dir,
        download=cfg.data.download,
    )
    return device, dtype, data


def build_run(cfg: Config) -> Run:
    """Data, model (seeded init), optimizer, sampler and recorder for a config."""
    from spherelab.sphere.check import si_parameters

    device, dtype, data = load_run_data(cfg)
    torch.manual_seed(cfg.train.seed)
    model = build_model_for(cfg, data).to(device=device, dtype=dtype)
    if cfg.train.init_from:
        load_weights(model, cfg.train.init_from, device)
    if cfg.train.channels_last and data.x_train.dim() == 4:
        model = model.to(memory_format=torch.channels_last)
    si = si_parameters(model)
    names = {id(p): n for n, p in model.named_parameters()}
    sampler = BatchSampler(
        data.n_train,
        cfg.data.batch_size,
        torch.Generator().manual_seed(cfg.train.seed + 1),
        device=device,
    )
    if cfg.train.steps is not None:
        total = int(cfg.train.steps)
    else:
        total = int(cfg.train.epochs) * sampler.steps_per_epoch
    if total < 1:
        raise ValueError(
            f"train.epochs={cfg.train.epochs} / train.steps={cfg.train.steps} give "
            "no steps; set --epochs >= 1"
        )
    loss_fn = get_loss(cfg.train.loss)
    recorder = Recorder(
        model,
        loss_fn,
        eval_batches(data.x_train, data.y_train, cfg),
        eval_batches(data.x_test, data.y_test, cfg),
        [names[id(p)] for p in si],
        si,
    )
    aug = (
        torch.Generator(device=device).manual_seed(cfg.train.seed + 2) if cfg.data.augment else None
    )
    return Run(
        cfg,
        device,
        model,
        data,
        make_optimizer(cfg.optim, model, si),
        sampler,
        recorder,
        total,
        aug,
    )


def load_weights(model: nn.Module, path: str, device: torch.device) -> None:
    """Start from a checkpoint's weights (the optimizer and its radius start afresh there)."""
    try:
        state = ckpt.load_checkpoint(Path(path), device)
        model.load_state_dict(state["model"] if "model" in state else state)
    except (OSError, RuntimeError, KeyError, pickle.UnpicklingError) as err:
        raise ValueError(
            f"train.init_from={path!r} cannot start this model ({type(err).__name__}); pass a "
            "checkpoint .pt from a run of the same model/width in its checkpoints/ directory"
        ) from None


def eval_batches(
    x: torch.Tensor, y: torch.Tensor, cfg: Config
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if cfg.train.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return [(x[s], y[s]) for s in fixed_batches(len(y), cfg.train.eval_batch_size)]


def train_run(
    cfg: Config, out_dir: str | Path, *, resume: bool = True, progress: bool | ProgressFn = False
) -> dict[str, Any]:
    """Train (or resume, or return the finished result of) one run in out_dir."""
    out = Path(out_dir)
    finished = runfiles.prepare_dir(cfg, out, resume)
    if finished is not None:
        return finished
    run = build_run(cfg)
    records, start = runfiles.restore(run, out) if resume else ([], 0)
    if start == 0:
        records = []
        (out / "metrics.jsonl").unlink(missing_ok=True)
        ckpt.save_init(out, run.recorder.init)
    ckpt.write_json(out / "config.json", cfg.to_dict() | {"environment": environment(run.device)})
    status, records = _loop(run, out, records, start, progress_fn(progress))
    return runfiles.finish(run, out, records, status)


def _loop(run: Run, out: Path, records: list, start: int, progress: ProgressFn | None):
    cfg, spe = run.cfg, run.sampler.steps_per_epoch
    marks = set(
        ckpt.record_steps(run.total_steps, spe, cfg.train.records, cfg.train.record_schedule)
    )
    schedule = make_schedule(
        cfg.optim.schedule,
        run.total_steps / spe,
        cfg.optim.schedule_milestones,
        cfg.optim.schedule_factors,
    )
    remaining = run.remaining
    x_all, y_all = run.data.x_train, run.data.y_train
    if cfg.train.channels_last and x_all.dim() == 4:
        x_all = x_all.contiguous(memory_format=torch.channels_last)
    step_model = torch.compile(run.model) if cfg.train.compile else run.model
    loss_fn = get_loss(cfg.train.loss)
    window = torch.zeros((), device=run.device, dtype=torch.float64)
    if start == 0:
        records.append(_record(run, out, 0, schedule, remaining, len(records)))
    step, t0 = start, time.perf_counter()
    while step < run.total_steps:
        if not remaining:
            remaining.extend(run.sampler.epoch_indices())
        idx = remaining.popleft()
        x = x_all[idx]
        if run.aug_gen is not None:
            x = augment_images(x, run.aug_gen)
        set_rate(run.optimizer, cfg.optim, schedule(step / spe))
        window += train_step(step_model, loss_fn, run.optimizer, x, y_all[idx]).double()
        step += 1
        if step % spe == 0 or step in marks:
            if not math.isfinite(window.item()):  # one host read per epoch
                records.append(_record(run, out, step, schedule, remaining, len(records)))
                return "nonfinite", records
            window.zero_()
        if step in marks:
            records.append(_record(run, out, step, schedule, remaining, len(records)))
        if progress and (step % spe == 0 or step in marks):
            progress(
                {
                    "step": step,
                    "total": run.total_steps,
                    "epoch": step / spe,
                    "record": records[-1],
                    "elapsed": time.perf_counter() - t0,
                }
            )
    return "finished", records


def _record(
    run: Run, out: Path, step: int, schedule, remaining: deque, index: int
) -> dict[str, Any]:
    """Record number `index` (0 = init) at `step`: metrics, online diagnostics, checkpoint."""
    spe = run.sampler.steps_per_epoch
    # The rate of the step just taken (the loop sets the next step's rate again before it).
    lr, elr = set_rate(run.optimizer, run.cfg.optim, schedule(max(step - 1, 0) / spe))
    row = run.recorder.record(step, step / spe, lr, elr)
    if run.cfg.optim.mode == "conventional":  # the ELR is a consequence, not a setting
        row["elr"] = lr / max(row["si_norm"], 1e-30) ** 2
    ckpt.append_record(out / "metrics.jsonl", row)
    _diagnose_online(run, out, step, index)
    runfiles.save(run, out, step, remaining)
    return row


def _diagnose_online(run: Run, out: Path, step: int, index: int) -> None:
    """Landscape diagnostics at every `diagnose_every`-th record (they leave the run untouched)."""
    if not run.cfg.train.diagnose:
        return
    from spherelab.diagnose import DiagnoseOptions, diagnose_point, parse_what

    if index % max(run.cfg.train.diagnose_every, 1):
        return
    opts = DiagnoseOptions(what=parse_what(run.cfg.train.diagnose))
    ckpt.append_record(out / "diagnostics.jsonl", diagnose_point(run, opts, step))


def progress_fn(progress: bool | ProgressFn) -> ProgressFn | None:
    if callable(progress):
        return progress
    if not progress:
        return None

    def to_log(info: dict[str, Any]) -> None:
        rec = info["record"]
        log.info(
            "step %d/%d epoch %.1f train_loss %.4g test_acc %.3f",
            info["step"],
            info["total"],
            info["epoch"],
            rec["train_loss"],
            rec["test_acc"],
        )

    return to_log
