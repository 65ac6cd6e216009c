"""Train K packable runs as one ensemble module; each member writes exactly a single run's files.

`train_ensemble(cfgs, out_dirs)` is the ensemble twin of spherelab.engine.train_run: member k
gets config.json, metrics.jsonl (same keys, same log-spaced record steps), summary.json (regime
via classify_records) and checkpoints/ holding its UNPACKED state, so the single-run code can
diagnose or resume it, and an interrupted ensemble resumes from its members' checkpoints.
A member whose loss goes non-finite is recorded and finished as `nonfinite` (as a single run
would be) and frozen at ELR 0 while the others go on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from spherelab.config import Config
from spherelab.data.augment import augment_images
from spherelab.ensemble.members import member_inputs
from spherelab.ensemble.pack import can_pack, pack_key
from spherelab.runtime import environment
from spherelab.train import checkpoints as ckpt
from spherelab.train import engine
from spherelab.train import run_files as runfiles
from spherelab.train.pack_build import (
    Ensemble,
    build_ensemble,
    fresh_members,
    restore_members,
    save_members,
)
from spherelab.train.schedules import make_schedule
from spherelab.train.step import cuda_graph_step, eager_step


def train_ensemble(
    cfgs: Sequence[Config],
    out_dirs: Sequence[str | Path],
    *,
    resume: bool = True,
    progress: bool | engine.ProgressFn = False,
    shared_batches: bool = False,
    cuda_graph: bool = False,
) -> list[dict[str, Any]]:
    """Train (or resume, or return the finished results of) K runs in one module.

    `cfgs` must satisfy can_pack (equal but for optim.elr and train.seed). By default every
    member draws its own batch order from its own seed, exactly like its single run;
    `shared_batches` feeds all members member 0's order. `cuda_graph` replays the whole step
    as one CUDA graph (CUDA only). Returns one summary per config, in order.
    """
    cfgs, outs = list(cfgs), [Path(o) for o in out_dirs]
    if len(cfgs) != len(outs) or not cfgs:
        raise ValueError(
            f"got {len(cfgs)} configs and {len(outs)} out_dirs; pass one "
            "directory per config (at least one)"
        )
    if len({o.resolve() for o in outs}) != len(outs):
        raise ValueError("out_dirs repeat a directory; give every member its own directory")
    if not can_pack(cfgs):
        keys = sorted({pack_key(c)[0] for c in cfgs})
        raise ValueError(
            f"these configs cannot share one ensemble (kinds {keys}): they must be "
            "sphere mode, global sphere, a *_si model, and equal except optim.elr "
            "and train.seed; group them with pack_key() or use train_run"
        )
    summaries = [runfiles.prepare_dir(c, o, resume) for c, o in zip(cfgs, outs)]
    todo = [k for k, s in enumerate(summaries) if s is None]
    if todo:
        done = _train(
            [cfgs[k] for k in todo],
            [outs[k] for k in todo],
            resume,
            engine.progress_fn(progress),
            shared_batches,
            cuda_graph,
        )
        for k, summary in zip(todo, done):
            summaries[k] = summary
    return summaries


def _train(cfgs, outs, resume, progress, shared_batches, cuda_graph) -> list[dict[str, Any]]:
    ens = build_ensemble(cfgs, outs, shared_batches)
    records, start = restore_members(ens) if resume else ([[] for _ in cfgs], 0)
    if start == 0:
        records = [[] for _ in cfgs]
        fresh_members(ens)
    env = environment(ens.runs[0].device)
    for cfg, out in zip(cfgs, outs):
        ckpt.write_json(out / "config.json", cfg.to_dict() | {"environment": env})
    summaries: list[dict[str, Any] | None] = [None] * len(cfgs)
    _loop(ens, records, start, summaries, progress, cuda_graph)
    for k in range(ens.members):
        if summaries[k] is None:
            summaries[k] = runfiles.finish(ens.runs[k], outs[k], records[k], "finished")
    return summaries


def _next_batch(ens: Ensemble, x_all: torch.Tensor, y_all: torch.Tensor):
    """Member batches in the ensemble's input layout (members.member_inputs: [B, K*C, ...] or
    [K, F, B]) and labels y [K, B]."""
    idx = []
    for k, run in enumerate(ens.runs):
        if k and run.remaining is ens.runs[0].remaining:  # shared batch order
            idx.append(idx[0])
            continue
        if not run.remaining:
            run.remaining.extend(run.sampler.epoch_indices())
        idx.append(run.remaining.popleft())
    index = torch.stack(idx)  # [K, B]
    x = x_all.index_select(0, index.view(-1)).view(*index.shape, *x_all.shape[1:])
    if ens.runs[0].aug_gen is not None:
        x = torch.stack([augment_images(x[k], run.aug_gen) for k, run in enumerate(ens.runs)])
    y = y_all.index_select(0, index.view(-1)).view(index.shape)
    return member_inputs(x, ens.model.member_layout), y


def _set_elr(ens: Ensemble, factor: float) -> None:
    """Every member's ELR under the schedule factor, in place on the device (no host-to-device
    copy per step under a cosine schedule; CUDA graphs see the new values)."""
    torch.mul(ens.base_elr, factor, out=ens.elr)


def _record(ens: Ensemble, step: int, factor: float, records, only: list[int]) -> None:
    spe = ens.runs[0].sampler.steps_per_epoch
    elrs = [r.cfg.optim.elr * factor for r in ens.runs]
    lrs = [e * rad**2 for e, rad in zip(elrs, ens.radii)]
    rows = ens.recorder.record(step, step / spe, lrs, elrs)
    for k in only:
        records[k].append(rows[k])
        ckpt.append_record(ens.outs[k] / "metrics.jsonl", rows[k])
    save_members(ens, step, only)


class _Stepper:
    """Eager/compiled step, or a CUDA graph for full batches (eager for a short last one)."""

    def __init__(self, ens: Ensemble, cuda_graph: bool) -> None:
        cfg = ens.runs[0].cfg
        model = torch.compile(ens.model) if cfg.train.compile else ens.model
        self.eager = eager_step(model, ens.optimizer, cfg.train.loss)
        self.ens, self.want_graph, self.graph = ens, cuda_graph, None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not self.want_graph or y.shape[-1] != self.ens.runs[0].sampler.batch_size:
            return self.eager(x, y)
        if self.graph is None:
            self.graph = cuda_graph_step(
                self.ens.model, self.ens.optimizer, self.ens.runs[0].cfg.train.loss, x, y
            )
        return self.graph(x, y)


def _loop(ens: Ensemble, records, start: int, summaries, progress, cuda_graph: bool) -> None:
    cfg, total = ens.runs[0].cfg, ens.total_steps
    spe = ens.runs[0].sampler.steps_per_epoch
    marks = set(ckpt.record_steps(total, spe, cfg.train.records, cfg.train.record_schedule))
    schedule = make_schedule(
        cfg.optim.schedule, total / spe, cfg.optim.schedule_milestones, cfg.optim.schedule_factors
    )
    x_all, y_all = ens.runs[0].data.x_train, ens.runs[0].data.y_train
    stepper, factor = _Stepper(ens, cuda_graph), schedule(start / spe)
    _set_elr(ens, factor)
    window = torch.zeros(ens.members, dtype=torch.float64, device=ens.elr.device)
    if start == 0:
        _record(ens, 0, factor, records, list(range(ens.members)))
    step, t0 = start, time.perf_counter()
    while step < total and any(ens.active):
        x, y = _next_batch(ens, x_all, y_all)
        if schedule(step / spe) != factor:
            factor = schedule(step / spe)
            _set_elr(ens, factor)
        window += stepper(x, y).double()
        step += 1
        if step % spe == 0 or step in marks:
            _freeze_nonfinite(ens, window.tolist(), step, factor, records, summaries)
            window.zero_()
        active = [k for k, on in enumerate(ens.active) if on]
        if step in marks and active:
            _record(ens, step, factor, records, active)
        if progress and active and (step % spe == 0 or step in marks):
            progress(
                {
                    "step": step,
                    "total": total,
                    "epoch": step / spe,
                    "record": records[active[0]][-1],
                    "records": [r[-1] for r in records],
                    "elapsed": time.perf_counter() - t0,
                }
            )


def _freeze_nonfinite(
    ens: Ensemble, window: list[float], step: int, factor: float, records, summaries
) -> None:
    """Members whose loss went non-finite: record them, finish them, ELR 0 from now on."""
    bad = [k for k, v in enumerate(window) if ens.active[k] and not math.isfinite(v)]
    if not bad:
        return
    prev = [t.clone() for t in ens.recorder.prev]  # the others keep their last record's point
    _record(ens, step, factor, records, bad)
    ens.recorder.prev = prev
    for k in bad:
        ens.active[k] = False
        ens.base_elr[k] = 0.0
        summaries[k] = _finish_nonfinite(ens, k, records[k])
    _set_elr(ens, factor)


def _finish_nonfinite(ens: Ensemble, k: int, records: list[dict]) -> dict[str, Any]:
    """The single run's summary; when the classifier refuses a run this short (the loss went
    non-finite within the first record interval) the member is labelled divergence so that
    the other members carry on."""
    try:
        return runfiles.finish(ens.runs[k], ens.outs[k], records, "nonfinite")
    except ValueError as err:
        run = ens.runs[k]
        summary = dict(records[-1]) | {
            "status": "nonfinite",
            "regime": "divergence",
            "regime_stats": {"reason": f"non-finite loss, too few records to classify ({err})"},
            "elr_config": run.cfg.optim.elr,
            "seed": run.cfg.train.seed,
            "num_classes": run.data.num_classes,
            "init_train_loss": records[0]["train_loss"],
        }
        ckpt.write_json(ens.outs[k] / "summary.json", summary)
        return summary
