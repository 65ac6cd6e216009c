"""Executors: run a sweep's tasks inline, in local processes, as Slurm arrays or as Ray tasks.

Every executor takes the same tasks and a runner `runner(config, run_dir) -> summary dict` and
returns one Outcome per task, in task order; a runner that raises yields a failed Outcome and the
other tasks carry on. The runner must be picklable for the process-based executors (local,
submitit, ray). Task, Outcome, Settings and `execute` (one task, errors captured) live in
spherelab.sweep.tasks; which runs train together as one pack is spherelab.sweep.packing's.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch

from spherelab.config import Config, ConfigError
from spherelab.diagnose import hooks_for
from spherelab.sweep.packing import AUTO, pack_groups, run_pack
from spherelab.sweep.tasks import (
    OnDone,
    Outcome,
    Runner,
    Settings,
    Task,
    execute,
    gather,
)
from spherelab.train import train_ensemble
from spherelab.train.loop import ProgressFn

log = logging.getLogger("spherelab")


class MissingExtraError(ValueError):
    """An executor whose optional dependency is not installed."""


class EngineRunner:
    """The default runner: train (or resume, or reuse) one run with the engine, with the record
    hooks its config asks for (train.diagnose). It can also train a pack of packable runs as
    one module (`train_pack`); a runner without `train_pack` trains runs one by one. A subclass
    that changes how one run trains must override `train_pack` too (or set it to None), since
    packs never call `__call__`.

    `progress` (optional) gets the engine's progress dicts inside each run or pack (see
    spherelab.train.engine.train_ensemble); run_sweep sets it for the inline executor only,
    since the process executors pickle the runner."""

    def __init__(self, progress: ProgressFn | None = None) -> None:
        self.progress = progress

    def __call__(self, config: Config, run_dir: str) -> dict[str, Any]:
        return self.train_pack([config], [run_dir])[0]

    def train_pack(
        self, configs: Sequence[Config], run_dirs: Sequence[str]
    ) -> list[dict[str, Any]]:
        return train_ensemble(
            configs,
            run_dirs,
            resume=True,
            hooks=hooks_for(configs[0]),
            progress=self.progress or False,
        )


train_runner = EngineRunner()


def run_inline(
    tasks: Sequence[Task], runner: Runner, on_done: OnDone, settings: Settings
) -> list[Outcome]:
    """Sequential, in this process (packs of compatible runs go through run_pack)."""
    by_dir: dict[str, Outcome] = {}
    for group in pack_groups(tasks, settings.pack):
        for outcome in run_pack(group, runner):
            on_done(outcome)
            by_dir[outcome.run_dir] = outcome
    return [by_dir[t.run_dir] for t in tasks]


def _cuda_count() -> int:
    return torch.cuda.device_count()


def assign_devices(tasks: Sequence[Task], n_gpus: int) -> list[Task]:
    """Round-robin cuda:i for runs whose device is auto/cuda (an explicit choice is kept)."""
    if n_gpus <= 0:
        return list(tasks)
    out = []
    for i, task in enumerate(tasks):
        if task.config.train.device in ("auto", "cuda"):
            train = dataclasses.replace(task.config.train, device=f"cuda:{i % n_gpus}")
            task = Task(dataclasses.replace(task.config, train=train), task.run_dir)
        out.append(task)
    return out


def _set_threads(n: int) -> None:
    torch.set_num_threads(n)


def run_local(
    tasks: Sequence[Task], runner: Runner, on_done: OnDone, settings: Settings
) -> list[Outcome]:
    """`workers` spawned processes on this machine, GPUs assigned round-robin."""
    tasks = assign_devices(tasks, _cuda_count())
    context = multiprocessing.get_context("spawn")
    # Share the cores: N workers with all cores each oversubscribe and run many times slower.
    threads = max(1, (os.cpu_count() or 1) // settings.workers)
    with ProcessPoolExecutor(
        max_workers=settings.workers,
        mp_context=context,
        initializer=_set_threads,
        initargs=(threads,),
    ) as pool:
        futures = {pool.submit(execute, runner, task): i for i, task in enumerate(tasks)}
        pairs = ((futures[f], f.result) for f in as_completed(futures))
        return gather(pairs, tasks, on_done)


def run_submitit(
    tasks: Sequence[Task], runner: Runner, on_done: OnDone, settings: Settings
) -> list[Outcome]:
    """One Slurm job array (submitit.AutoExecutor); cluster='local' runs it on this machine."""
    submitit = require_extra("submitit")
    opts = settings.options
    folder = Path(opts["folder"] or settings.work_dir / "submitit")
    executor = submitit.AutoExecutor(folder=folder, cluster=opts["cluster"])
    params: dict[str, Any] = {
        "timeout_min": opts["timeout_min"],
        "cpus_per_task": opts["cpus_per_task"],
        "slurm_array_parallelism": opts["array_parallelism"] or settings.workers,
    }
    if opts["partition"]:
        params["slurm_partition"] = opts["partition"]
    if opts["gpus_per_run"]:
        params["gpus_per_node"] = int(opts["gpus_per_run"])
    if opts["mem_gb"]:
        params["mem_gb"] = opts["mem_gb"]
    executor.update_parameters(**params)
    with executor.batch():
        jobs = [executor.submit(execute, runner, task) for task in tasks]
    index = {id(job): i for i, job in enumerate(jobs)}
    completed = submitit.helpers.as_completed(jobs, poll_frequency=opts["poll_s"])
    return gather(((index[id(job)], job.result) for job in completed), tasks, on_done)


def _ray_completed(ray: Any, refs: list[Any]) -> Iterator[tuple[int, Callable[[], Outcome]]]:
    index = {ref: i for i, ref in enumerate(refs)}
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for ref in done:
            yield index[ref], functools.partial(ray.get, ref)


def run_ray(
    tasks: Sequence[Task], runner: Runner, on_done: OnDone, settings: Settings
) -> list[Outcome]:
    """Ray tasks; joins a running Ray (ray.init by the caller) or starts and stops one."""
    ray = require_extra("ray")
    opts = settings.options
    started = not ray.is_initialized()
    if started:
        ray.init(address=opts["address"], include_dashboard=False)
    try:
        remote = ray.remote(num_cpus=opts["cpus_per_run"], num_gpus=opts["gpus_per_run"])
        refs = [remote(execute).remote(runner, task) for task in tasks]
        return gather(_ray_completed(ray, refs), tasks, on_done)
    finally:
        if started:
            ray.shutdown()


EXECUTORS: dict[str, Callable[..., list[Outcome]]] = {
    "inline": run_inline,
    "local": run_local,
    "submitit": run_submitit,
    "ray": run_ray,
}
# Options per executor and their defaults (units in the names).
OPTIONS: dict[str, dict[str, Any]] = {
    "inline": {},
    "local": {},
    "submitit": {
        "cluster": None,
        "folder": None,
        "partition": None,
        "timeout_min": 720,
        "gpus_per_run": 0,
        "cpus_per_task": 1,
        "mem_gb": None,
        "array_parallelism": None,
        "poll_s": 10.0,
    },
    "ray": {"address": None, "gpus_per_run": 0.0, "cpus_per_run": 1.0},
}
_EXTRAS = {"submitit": ("submitit", "slurm"), "ray": ("ray", "ray")}


def require_extra(executor: str) -> Any:
    """Import an executor's optional dependency, or say which extra to install."""
    module, extra = _EXTRAS[executor]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(
            f"executor {executor!r} needs the {extra} extra: pip install 'spherelab[{extra}]'"
        ) from None


def make_settings(
    executor: str,
    *,
    workers: int,
    pack: int | str,
    options: Mapping[str, Any] | None,
    work_dir: Path,
) -> Settings:
    """Validate an executor choice and its options before anything runs. ``pack="auto"``
    packs where it pays with the inline executor and means 1 with the others."""
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; use one of {', '.join(EXECUTORS)}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers={workers!r} must be a positive integer")
    if pack == AUTO:
        pack = AUTO if executor == "inline" else 1
    elif isinstance(pack, bool) or not isinstance(pack, int) or pack < 1:
        raise ConfigError(f"pack={pack!r} must be a positive integer (1 = no packing) or {AUTO!r}")
    elif pack > 1 and executor != "inline":
        raise ConfigError(f"pack={pack} needs executor 'inline'; use --executor inline or pack 1")
    allowed = OPTIONS[executor]
    unknown = sorted(set(options or {}) - set(allowed))
    if unknown:
        valid = ", ".join(allowed) or "none"
        raise ConfigError(
            f"executor {executor!r} has no option(s) {', '.join(unknown)}; valid options: {valid}"
        )
    if executor in _EXTRAS:
        require_extra(executor)
    return Settings(workers, pack, allowed | dict(options or {}), work_dir)


def run_tasks(
    executor: str, tasks: Sequence[Task], runner: Runner, on_done: OnDone, settings: Settings
) -> list[Outcome]:
    """Run tasks with the named executor (settings from make_settings)."""
    if not tasks:
        return []
    return EXECUTORS[executor](tasks, runner, on_done, settings)
