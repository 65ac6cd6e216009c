"""Train one run: build it from a Config, step it, record log-spaced metrics, checkpoint, resume.

The run directory contract (DESIGN.md §2): config.json, metrics.jsonl, summary.json,
checkpoints/. The sphere constraint lives in the optimizer; this loop never touches norms.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spherelab import checkpoint as ckpt
from spherelab.config import Config, from_dict
from spherelab.data import BatchSampler, Dataset, augment_images, fixed_batches, load_dataset
from spherelab.losses import get_loss
from spherelab.recorder import Recorder
from spherelab.runtime import environment, resolve_device, resolve_dtype
from spherelab.schedules import make_schedule
from spherelab.training import make_optimizer, set_rate, train_step

log = logging.getLogger("spherelab")
ProgressFn = Callable[[dict[str, Any]], None]
FINAL_STATUSES = ("finished", "nonfinite")


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


def build_run(cfg: Config) -> Run:
    """Data, model (seeded init), optimizer, sampler and recorder for a config."""
    from spherelab.scale_invariance import si_parameters

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
    torch.manual_seed(cfg.train.seed)
    model = build_model_for(cfg, data).to(device=device, dtype=dtype)
    if cfg.train.init_from:
        _load_weights(model, cfg.train.init_from, device)
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
        _batches(data.x_train, data.y_train, cfg),
        _batches(data.x_test, data.y_test, cfg),
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


def _load_weights(model: nn.Module, path: str, device: torch.device) -> None:
    """Start from a checkpoint's weights (the optimizer and its radius start afresh there)."""
    try:
        state = ckpt.load_checkpoint(Path(path), device)
    except FileNotFoundError:
        raise ValueError(
            f"train.init_from={path!r} does not exist; pass a checkpoint .pt "
            "from a run's checkpoints/ directory"
        ) from None
    model.load_state_dict(state["model"] if "model" in state else state)


def _batches(
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
    finished = _prepare_dir(cfg, out, resume)
    if finished is not None:
        return finished
    run = build_run(cfg)
    records, start = _restore(run, out) if resume else ([], 0)
    if start == 0:
        records = []
        (out / "metrics.jsonl").unlink(missing_ok=True)
        ckpt.save_init(out, run.recorder.init)
    ckpt.write_json(out / "config.json", cfg.to_dict() | {"environment": environment(run.device)})
    status, records = _loop(run, out, records, start, _progress_fn(progress))
    return _finish(run, out, records, status)


def _prepare_dir(cfg: Config, out: Path, resume: bool) -> dict[str, Any] | None:
    """Refuse a directory that holds a different run; return a finished run's summary."""
    cfg_path = out / "config.json"
    if not cfg_path.exists():
        out.mkdir(parents=True, exist_ok=True)
        return None
    try:
        saved = from_dict(json.loads(cfg_path.read_text(encoding="utf-8")))
    except (ValueError, json.JSONDecodeError):
        raise ValueError(f"{out} holds an unreadable config.json; choose another --out") from None
    if _comparable(saved) != _comparable(cfg):
        raise ValueError(
            f"{out} already holds a different run (its config.json differs); "
            "choose another --out or delete that directory"
        )
    summary_path = out / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        if summary.get("status") in FINAL_STATUSES:
            if resume:
                return summary
            raise ValueError(
                f"{out} already holds this finished run; use another --out, or "
                "--resume to reuse its result"
            )
    if not resume and (out / "metrics.jsonl").exists():
        raise ValueError(
            f"{out} holds an unfinished run; pass --resume to continue it or choose another --out"
        )
    return None


def _comparable(cfg: Config) -> dict[str, Any]:
    """The config minus where it runs: a run may resume on another device."""
    data = cfg.to_dict()
    data["train"].pop("device")
    return data


def _restore(run: Run, out: Path) -> tuple[list[dict[str, Any]], int]:
    """Load the latest checkpoint; keep the records up to it. (records, step)."""
    paths = ckpt.list_checkpoints(out)
    if not paths:
        return [], 0
    state = ckpt.load_checkpoint(paths[-1], run.device)
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.sampler.load_state_dict(state["sampler"])
    torch.set_rng_state(state["torch_rng"])
    if run.aug_gen is not None:
        run.aug_gen.set_state(state["aug_rng"])
    run.recorder.init = ckpt.load_init(out, run.device)
    run.recorder.prev = list(state["prev"])
    run.remaining = deque(t.to(run.device) for t in state["remaining"])
    step = int(state["step"])
    records = [r for r in ckpt.read_records(out / "metrics.jsonl") if r["step"] <= step]
    ckpt.write_records(out / "metrics.jsonl", records)
    log.info("resumed %s at step %d", out, step)
    return records, step


def _save(run: Run, out: Path, step: int, remaining: deque) -> None:
    if run.cfg.train.checkpoints == "none":
        return
    if run.cfg.train.checkpoints == "last" and step != run.total_steps:
        return
    payload = {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "sampler": run.sampler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "aug_rng": run.aug_gen.get_state() if run.aug_gen is not None else None,
        "prev": run.recorder.prev,
        "remaining": [t.cpu() for t in remaining],
        "step": step,
    }
    ckpt.save_checkpoint(out, step, payload)


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
        records.append(_record(run, out, 0, schedule, remaining))
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
                records.append(_record(run, out, step, schedule, remaining))
                return "nonfinite", records
            window.zero_()
        if step in marks:
            records.append(_record(run, out, step, schedule, remaining))
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


def _record(run: Run, out: Path, step: int, schedule, remaining: deque) -> dict[str, Any]:
    spe = run.sampler.steps_per_epoch
    lr, elr = set_rate(run.optimizer, run.cfg.optim, schedule(step / spe))
    row = run.recorder.record(step, step / spe, lr, elr)
    if run.cfg.optim.mode == "conventional":  # the ELR is a consequence, not a setting
        row["elr"] = lr / max(row["si_norm"], 1e-30) ** 2
    ckpt.append_record(out / "metrics.jsonl", row)
    _diagnose_online(run, out, step)
    _save(run, out, step, remaining)
    return row


def _diagnose_online(run: Run, out: Path, step: int) -> None:
    """Landscape diagnostics at every `diagnose_every`-th record (they leave the run untouched)."""
    if not run.cfg.train.diagnose:
        return
    from spherelab.diagnose import DiagnoseOptions, diagnose_point, parse_what

    index = len(ckpt.read_records(out / "metrics.jsonl")) - 1
    if index % max(run.cfg.train.diagnose_every, 1):
        return
    opts = DiagnoseOptions(what=parse_what(run.cfg.train.diagnose))
    ckpt.append_record(out / "diagnostics.jsonl", diagnose_point(run, opts, step))


def _finish(run: Run, out: Path, records: list[dict[str, Any]], status: str) -> dict[str, Any]:
    from spherelab.regimes import classify_records

    try:
        verdict = classify_records(records, num_classes=run.data.num_classes)
        regime, stats = verdict.regime, verdict.stats
    except ValueError as err:  # too few records to have a trajectory
        regime, stats = "unclassified", {"reason": str(err)}
        if status == "nonfinite":  # a non-finite loss is divergence however short the run
            regime = "divergence"
    summary = dict(records[-1]) | {
        "status": status,
        "regime": regime,
        "regime_stats": stats,
        "elr_config": run.cfg.optim.elr,
        "seed": run.cfg.train.seed,
        "num_classes": run.data.num_classes,
        "init_train_loss": records[0]["train_loss"],
    }
    ckpt.write_json(out / "summary.json", summary)
    return summary


def relabel_run(run_dir: str | Path) -> dict[str, Any]:
    """Re-classify a finished run from its metrics.jsonl (after the classifier changed) and
    rewrite summary.json; returns the new summary."""
    from spherelab.regimes import classify_records

    out = Path(run_dir)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    records = ckpt.read_records(out / "metrics.jsonl")
    verdict = classify_records(records, num_classes=summary.get("num_classes"))
    regime = "divergence" if summary.get("status") == "nonfinite" else verdict.regime
    summary.update(regime=regime, regime_stats=verdict.stats)
    ckpt.write_json(out / "summary.json", summary)
    return summary


def _progress_fn(progress: bool | ProgressFn) -> ProgressFn | None:
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
