"""The training loop of a pack (a single run is the pack of one): step, record log-spaced
metrics, call the record hooks, checkpoint, and finish members whose loss went non-finite.

The sphere constraint lives in the optimizer; this loop never touches norms. It reads the
device once per epoch or record (the accumulated losses), never per step. Anything else that
should happen at a record (landscape diagnostics, custom logging) is a hook: a callable that
gets a RecordEvent; the loop imports no diagnostics.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from spherelab.io import append_jsonl
from spherelab.train import run_files
from spherelab.train.build import Pack, Run
from spherelab.train.checkpoints import record_steps
from spherelab.train.schedules import make_schedule
from spherelab.train.sharing import Packed
from spherelab.train.step import StepFn, cuda_graph_step, eager_step, ghost_step

ProgressFn = Callable[[dict[str, Any]], None]
StopFn = Callable[[], bool]  # asked at every epoch end: True stops the pack there (preemption)


class Interrupted(BaseException):
    """Training stopped at an epoch end because `stop` asked (a preempted or timed-out job):
    every running member saved a checkpoint at that step, so rerunning the same runs resumes
    them exactly. A BaseException, so that no one-by-one fallback catches it as a failure."""

    def __init__(self, step: int) -> None:
        super().__init__(f"training stopped on request at step {step}; rerun to resume")
        self.step = step


@dataclass(frozen=True)
class RecordEvent:
    """Member `member` of `pack` was just recorded (`row`, record number `index`, 0 = init)."""

    pack: Pack
    member: int
    step: int
    index: int
    row: dict[str, Any]

    @property
    def out(self) -> Path:
        return self.pack.members[self.member].out

    def run(self) -> Run:
        """The member as a single run at its current weights (built on demand)."""
        return self.pack.member_run(self.member)


RecordHook = Callable[[RecordEvent], None]


class Stepper:
    """Eager/compiled step, or a CUDA graph for full batches (eager for a short last one)."""

    def __init__(self, pack: Pack, cuda_graph: bool) -> None:
        share, cfg = pack.share, pack.cfg
        model = torch.compile(share.model) if cfg.train.compile else share.model
        packed = isinstance(share, Packed)
        self.eager: StepFn = eager_step(model, share.optimizer, cfg.train.loss, packed)
        if cfg.train.ghost_batch > 0:  # one run only (such configs never pack)
            sampler = pack.members[0].sampler  # its generator is checkpointed: resumes replay
            shuffle = sampler.generator if sampler.full_batch else None
            ghost = cfg.train.ghost_batch
            self.eager = ghost_step(model, share.optimizer, cfg.train.loss, ghost, shuffle)
        self.pack, self.want_graph = pack, cuda_graph
        self.graph: StepFn | None = None

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        if not self.want_graph or y.shape[-1] != self.pack.members[0].sampler.batch_size:
            return self.eager(x, y)
        if self.graph is None:
            share = self.pack.share
            self.graph = cuda_graph_step(
                share.model, share.optimizer, self.pack.cfg.train.loss, x, y
            )
        return self.graph(x, y)


def next_batch(pack: Pack, x_all: Tensor, y_all: Tensor) -> tuple[Tensor, Tensor]:
    """The next batch of every member, in the module's input layout."""
    idx: list[Tensor] = []
    for k, m in enumerate(pack.members):
        if k and m.remaining is pack.members[0].remaining:  # shared batch order
            idx.append(idx[0])
            continue
        if not m.remaining:
            m.remaining.extend(m.sampler.epoch_indices())
        idx.append(m.remaining.popleft())
    gens = [m.aug_gen for m in pack.members if m.aug_gen is not None]
    return pack.share.batch(x_all, y_all, idx, gens or None)


def record(pack: Pack, step: int, only: list[int], hooks: Sequence[RecordHook]) -> None:
    """Record members `only` at `step`: rows to metrics.jsonl, hooks, checkpoints."""
    rows = pack.recorder.record(
        step,
        step / pack.steps_per_epoch,
        pack.share.rates(),
        only,
        measured_elr=pack.cfg.optim.mode == "conventional",  # the ELR is a consequence there
    )
    for k, row in zip(only, rows):
        m = pack.members[k]
        m.records.append(row)
        append_jsonl(m.out / "metrics.jsonl", row)
        for hook in hooks:
            hook(RecordEvent(pack, k, step, len(m.records) - 1, row))
    run_files.save(pack, step, only)


def finish_nonfinite(
    pack: Pack, window: list[float], step: int, hooks: Sequence[RecordHook]
) -> None:
    """Members whose loss went non-finite: record and finish them; they take no more steps."""
    bad = [k for k, v in enumerate(window) if pack.members[k].active and not math.isfinite(v)]
    if not bad:
        return
    record(pack, step, bad, hooks)
    for k in bad:
        run_files.finish(pack, k, "nonfinite")
        pack.share.freeze(k)


def run_loop(
    pack: Pack,
    start: int,
    progress: ProgressFn | None,
    hooks: Sequence[RecordHook] = (),
    cuda_graph: bool = False,
    stop: StopFn | None = None,
) -> None:
    """Train from step `start` to the end; every member ends with a summary. When `stop()`
    says so at an epoch end, checkpoint the running members there and raise Interrupted."""
    cfg, total, spe = pack.cfg, pack.total_steps, pack.steps_per_epoch
    marks = set(record_steps(total, spe, cfg.train.records, cfg.train.record_schedule))
    schedule = make_schedule(
        cfg.optim.schedule, total / spe, cfg.optim.schedule_milestones, cfg.optim.schedule_factors
    )
    x_all, y_all = pack.share.train_inputs(pack.data.x_train), pack.data.y_train
    stepper, factor = Stepper(pack, cuda_graph), schedule(start / spe)
    pack.share.set_factor(factor)
    k_all = len(pack.members)
    window = torch.zeros(k_all, dtype=torch.float64, device=pack.device)
    if start == 0:
        record(pack, 0, [k for k, m in enumerate(pack.members) if m.active], hooks)
    for k, m in enumerate(pack.members):  # killed between a non-finite record and its summary
        if m.active and start and not math.isfinite(m.records[-1]["train_loss"]):
            run_files.finish(pack, k, "nonfinite")
            pack.share.freeze(k)
    step, t0 = start, time.perf_counter()
    active = [k for k, m in enumerate(pack.members) if m.active]
    while step < total and active:
        x, y = next_batch(pack, x_all, y_all)
        if schedule(step / spe) != factor:  # the rate of this step (records report it)
            factor = schedule(step / spe)
            pack.share.set_factor(factor)
        window += stepper(x, y).double()
        step += 1
        due = step in marks
        if not (due or step % spe == 0):
            continue
        finish_nonfinite(pack, window.tolist(), step, hooks)  # the one host read per epoch
        window.zero_()
        active = [k for k, m in enumerate(pack.members) if m.active]
        if due and active:
            record(pack, step, active, hooks)
        if progress and active:
            progress(
                {
                    "step": step,
                    "total": total,
                    "epoch": step / spe,
                    "record": pack.members[active[0]].records[-1],
                    "records": [m.records[-1] for m in pack.members],
                    "elapsed": time.perf_counter() - t0,
                }
            )
        if stop is not None and active and stop():
            run_files.save(pack, step, active, always=True)
            raise Interrupted(step)
    for k, m in enumerate(pack.members):
        if m.active:
            run_files.finish(pack, k, "finished")
