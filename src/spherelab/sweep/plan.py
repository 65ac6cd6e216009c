"""Plan a sweep without training it: the runs, the packs, the jobs each executor would launch,
and an estimate of wall time and device-hours from a calibration (spherelab.sweep.calibration).

Planning reads the sweep directory (to skip finished runs) but never writes to it nor takes
its lock; the packs are grouped exactly as run_sweep groups them (sweep.packing).
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spherelab.sweep.calibration import Calibration, calibrate, run_kind
from spherelab.sweep.executors import local_workers, make_settings, parallel_jobs, plan_jobs
from spherelab.sweep.files import is_done, open_sweep_dir
from spherelab.sweep.packing import AUTO, packing_pays
from spherelab.sweep.spec import Point, SweepSpec, expand
from spherelab.sweep.tasks import Settings, Task
from spherelab.train.build import total_steps
from spherelab.train.checkpoints import record_steps


@dataclass(frozen=True)
class PlannedPack:
    """One unit of work (one job of an executor): runs trained as one module, or one by one
    where --pack auto finds that packing does not pay on the device (`one_by_one`)."""

    points: tuple[Point, ...]
    kind: str  # calibration.run_kind of its runs
    steps: int | None  # optimizer steps per run (None: its kind is not calibrated)
    seconds: float | None  # estimated wall time of the pack on one worker
    one_by_one: bool = False


@dataclass(frozen=True)
class Plan:
    executor: str
    settings: Settings
    points: tuple[Point, ...]  # every run of the sweep (grid and stored refinement rounds)
    finished: tuple[Point, ...]  # those already finished in the sweep directory (skipped)
    packs: tuple[PlannedPack, ...]  # the work left, in submission order
    slots: int  # packs that train at once
    calibration: Calibration | None

    @property
    def estimated(self) -> list[PlannedPack]:
        return [p for p in self.packs if p.seconds is not None]

    @property
    def device_hours(self) -> float:
        """Worker-hours of the estimated packs (each pack holds one device or worker)."""
        return sum(p.seconds or 0.0 for p in self.packs) / 3600

    @property
    def wall_s(self) -> float:
        """Wall time of the estimated packs, `slots` at a time, first come first served."""
        free = [0.0] * max(1, self.slots)
        for pack in self.estimated:
            heapq.heappush(free, heapq.heappop(free) + (pack.seconds or 0.0))
        return max(free)


def slots(executor: str, settings: Settings, n_packs: int) -> int:
    """How many packs run at once (executors.parallel_jobs, at most one per pack)."""
    return max(1, min(parallel_jobs(executor, settings), n_packs))


def local_threads(settings: Settings) -> int:
    """Intra-op threads of each local worker (executors.run_local divides the cores)."""
    return max(1, (os.cpu_count() or 1) // local_workers(settings))


def plan_sweep(
    spec: SweepSpec,
    out_dir: str | Path,
    *,
    executor: str = "inline",
    workers: int = 2,
    pack: int | str = AUTO,
    executor_options: Mapping[str, Any] | None = None,
    calibration: Calibration | None = None,
    measure: bool = True,
) -> Plan:
    """What run_sweep(spec, out_dir, ...) would do now, without training: the runs, the packs
    left to train and an estimate. `calibration` (e.g. read from the target machine's file)
    gives the speeds; without one, `measure` times one pack of every kind and size here."""
    out = Path(out_dir).absolute()
    settings = make_settings(
        executor, workers=workers, pack=pack, options=executor_options, work_dir=out
    )
    rounds = open_sweep_dir(spec, out)  # reads only
    points = expand(spec, [entry for round_ in rounds for entry in round_])
    finished = [p for p in points if is_done(out / p.run_dir, p.config)]
    skip = {p.run_dir for p in finished}
    by_dir = {str(out / p.run_dir): p for p in points if p.run_dir not in skip}
    groups = plan_jobs(executor, [Task(p.config, d) for d, p in by_dir.items()], settings)
    # with auto, a job trains its pack as one module only where that pays on its device
    # (sweep.packing.group_outcomes); here this machine's device stands in for the workers'
    alone = [settings.pack == AUTO and not packing_pays(g[0].config) for g in groups]
    if calibration is None and measure and groups:
        threads = local_threads(settings) if executor == "local" else None
        timed = [[t.config for t in g][: 1 if a else None] for g, a in zip(groups, alone)]
        calibration = calibrate(timed, threads)
    packs = tuple(
        _planned([by_dir[t.run_dir] for t in g], calibration, a) for g, a in zip(groups, alone)
    )
    return Plan(
        executor,
        settings,
        tuple(points),
        tuple(finished),
        packs,
        slots(executor, settings, len(packs)),
        calibration,
    )


def _planned(
    points: Sequence[Point], calibration: Calibration | None, one_by_one: bool = False
) -> PlannedPack:
    cfg, kind = points[0].config, run_kind(points[0].config)
    speed = calibration.speeds.get(kind) if calibration else None
    if speed is None:
        return PlannedPack(tuple(points), kind, None, None, one_by_one)
    steps = total_steps(cfg, speed.steps_per_epoch)
    records = len(
        record_steps(steps, speed.steps_per_epoch, cfg.train.records, cfg.train.record_schedule)
    )
    k = 1 if one_by_one else len(points)
    seconds = steps * speed.step_seconds(k) + records * speed.record_seconds(k)
    if one_by_one:
        seconds *= len(points)
    return PlannedPack(tuple(points), kind, steps, seconds, one_by_one)


def duration(seconds: float) -> str:
    """Seconds for people: 45s, 12m30s, 3h05m."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def job_lines(plan: Plan) -> list[str]:
    """The jobs the plan's executor would launch, one line each."""
    n, opts, s = len(plan.packs), plan.settings.options, plan.settings
    if plan.executor == "inline":
        return [f"inline: this process trains the {n} pack(s) one after another"]
    if plan.executor == "local":
        return [
            f"local: {plan.slots} worker process(es) on this machine, "
            f"{local_threads(s)} thread(s) each; {n} task(s), one per pack"
        ]
    if plan.executor == "submitit":
        res = [f"timeout {opts.get('timeout_min')} min", f"{opts.get('cpus_per_task')} CPU(s)"]
        for key, label in (("partition", "partition"), ("mem_gb", "GB memory")):
            if opts.get(key):
                res.append(f"{label} {opts[key]}" if key == "partition" else f"{opts[key]} {label}")
        gpus = opts.get("gpus_per_run")
        if gpus:
            res.append(f"{gpus:g} GPU(s)")
        return [
            f"submitit: one Slurm job array of {n} task(s), one per pack, at most "
            f"{plan.slots} at once; each task: {', '.join(res)}"
        ]
    gpus = opts.get("gpus_per_run") or 0
    return [
        f"ray: {n} Ray task(s), one per pack; each asks num_cpus={opts.get('cpus_per_run')}, "
        f"num_gpus={gpus:g}"
    ]


def describe(plan: Plan) -> list[str]:
    """The plan as lines of text for people (the CLI prints them)."""
    left = len(plan.points) - len(plan.finished)
    finished = {p.run_dir for p in plan.finished}
    lines = [
        f"runs: {len(plan.points)} ({len(plan.finished)} finished, {left} to train)",
        *(
            f"  {p.run_dir}  elr={p.elr:.4g} seed={p.seed}"
            + "".join(f" {k}={v}" for k, v in p.axes.items())
            + ("  (finished)" if p.run_dir in finished else "")
            for p in plan.points
        ),
        f"packs: {len(plan.packs)} (--pack {plan.settings.pack}; each pack is one job)",
    ]
    for i, pack in enumerate(plan.packs, 1):
        elrs = sorted({p.elr for p in pack.points})
        seeds = sorted({p.seed for p in pack.points})
        cfg = pack.points[0].config
        est = "" if pack.seconds is None else f", ~{duration(pack.seconds)}"
        steps = "" if pack.steps is None else f" ({pack.steps} steps)"
        span = f"{elrs[0]:.3g}" + (f"..{elrs[-1]:.3g}" if len(elrs) > 1 else "")
        how = ", one by one here (packing does not pay on this device)" if pack.one_by_one else ""
        lines.append(
            f"  pack {i}: {len(pack.points)} run(s) of {cfg.model.name}, ELR {span}, "
            f"seed(s) {','.join(map(str, seeds))}{steps}{est}{how}"
        )
    if plan.settings.pack == AUTO or plan.executor != "inline":
        lines.append(
            "  (packs as this machine groups them; with --pack auto each worker packs where "
            "packing pays on its own device)"
        )
    lines += ["jobs:", *(f"  {line}" for line in job_lines(plan))]
    lines += _estimate_lines(plan)
    return lines


def _estimate_lines(plan: Plan) -> list[str]:
    cal = plan.calibration
    if not plan.packs:
        return ["estimate: nothing left to train"]
    if cal is None:
        return ["estimate: none (no calibration)"]
    lines = [
        f"estimate ({cal.source}: {cal.device} {cal.device_name}, {cal.threads} thread(s)): "
        f"wall ~{duration(plan.wall_s)} with {plan.slots} pack(s) at once, "
        f"{plan.device_hours:.3g} device-hours"
    ]
    missing = len(plan.packs) - len(plan.estimated)
    if missing:
        lines.append(
            f"  {missing} pack(s) of a kind the calibration does not hold are not counted; "
            "calibrate with this sweep's settings (--calibration-out)"
        )
    lines.append(
        "  (steps and evaluation records timed on a few steps of one pack per kind; "
        "checkpoints, online diagnostics and queueing are not counted)"
    )
    return lines
