"""Executors: run a sweep's jobs inline, in local processes, as Slurm arrays or as Ray tasks.

A job is one pack of compatible runs (spherelab.sweep.packing.pack_groups; a run that packs
with nothing is a job alone), trained where the job runs as ONE ensemble module when the runner
can (``auto``: when packing pays on that machine's device). Every executor takes the same tasks
and a runner `runner(config, run_dir) -> summary dict` and returns one Outcome per task, in
task order; a runner that raises yields a failed Outcome and the other runs carry on. The runner
must be picklable for the process-based executors (local, submitit, ray). Task, Outcome,
Settings and `execute` (one task, errors captured) live in spherelab.sweep.tasks.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch

from spherelab.config import Config, ConfigError
from spherelab.diagnose import hooks_for
from spherelab.sweep.packing import AUTO, group_outcomes, pack_groups
from spherelab.sweep.tasks import (
    OnDone,
    Outcome,
    Runner,
    Settings,
    Task,
    gather,
)
from spherelab.train import train_ensemble
from spherelab.train.loop import Interrupted, ProgressFn, StopFn

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
    since the process executors pickle the runner. `stop` (optional), asked at every epoch
    end, stops the run or pack there with a checkpoint (train.loop.Interrupted); a submitit
    job sets it on preemption."""

    def __init__(self, progress: ProgressFn | None = None, stop: StopFn | None = None) -> None:
        self.progress, self.stop = progress, stop

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
            stop=self.stop,
        )


train_runner = EngineRunner()


def run_job(runner: Runner, job: Sequence[Task], pack: int | str) -> list[Outcome]:
    """One job where it runs (a worker process, a Slurm job, a Ray task): its pack's outcomes."""
    return list(group_outcomes(job, runner, pack))


def run_inline(
    jobs: Sequence[Sequence[Task]], runner: Runner, on_done: OnDone, settings: Settings
) -> list[Outcome]:
    """Sequential, in this process."""
    outcomes = []
    for job in jobs:
        for outcome in group_outcomes(job, runner, settings.pack):
            on_done(outcome)
            outcomes.append(outcome)
    return outcomes


def _cuda_count() -> int:
    return torch.cuda.device_count()


def assign_devices(jobs: Sequence[Sequence[Task]], n_gpus: int) -> list[list[Task]]:
    """Round-robin cuda:i over jobs (a pack shares one GPU) for runs whose device is auto/cuda
    (an explicit choice is kept)."""
    if n_gpus <= 0:
        return [list(job) for job in jobs]
    out = []
    for i, job in enumerate(jobs):
        placed = []
        for task in job:
            if task.config.train.device in ("auto", "cuda"):
                train = dataclasses.replace(task.config.train, device=f"cuda:{i % n_gpus}")
                task = Task(dataclasses.replace(task.config, train=train), task.run_dir)
            placed.append(task)
        out.append(placed)
    return out


def check_pinnable(settings: Settings, configs: Iterable[Config]) -> None:
    """With --gpus every worker sees only its own GPU (as cuda:0): a run naming a GPU is an
    error, not a silent move."""
    if not settings.options.get("gpus"):
        return
    for config in configs:
        device = config.train.device
        if device.startswith("cuda:"):
            raise ConfigError(
                f"train.device={device!r} names a GPU, but --gpus pins each worker to its "
                "own GPU; use train.device=auto (or cuda), or drop --gpus"
            )


def start_worker(threads: int, devices: Any) -> None:
    """A local worker process's start: its share of the cores and, with --gpus, its own GPU
    (the only one it sees, so `auto` and `cuda` mean it)."""
    torch.set_num_threads(threads)
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(devices.get(timeout=60))


def local_workers(settings: Settings) -> int:
    """Worker processes of the local executor: one per --gpus entry, else `workers`."""
    gpus = settings.options.get("gpus")
    return len(gpus) if gpus else settings.workers


def run_local(
    jobs: Sequence[Sequence[Task]], runner: Runner, on_done: OnDone, settings: Settings
) -> list[Outcome]:
    """Spawned worker processes on this machine. With `gpus`, one worker per listed GPU, pinned
    to it (CUDA_VISIBLE_DEVICES); else `workers` workers and jobs get GPUs round-robin."""
    gpus = settings.options["gpus"]
    context = multiprocessing.get_context("spawn")
    devices = None
    if gpus:
        check_pinnable(settings, (task.config for job in jobs for task in job))
        devices = context.Queue()
        for gpu in gpus:
            devices.put(gpu)
    else:
        jobs = assign_devices(jobs, _cuda_count())
    workers = local_workers(settings)
    # Share the cores: N workers with all cores each oversubscribe and run many times slower.
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=start_worker,
        initargs=(threads, devices),
    ) as pool:
        futures = {
            pool.submit(run_job, runner, job, settings.pack): i for i, job in enumerate(jobs)
        }
        pairs = ((futures[f], f.result) for f in as_completed(futures))
        return gather(pairs, jobs, on_done)


class SlurmJob:
    """One submitit job: trains one pack (run_job), and is checkpointable the submitit way.

    On preemption or near its time limit submitit signals the job (USR2). With the default
    runner (EngineRunner itself, whose packs honour `stop`), the pack then trains on to its
    epoch end, checkpoints every running member there and stops (train.loop.Interrupted);
    submitit's own handler then requeues the job with the same arguments (`checkpoint`), and
    the rerun resumes each run exactly from that step. Any other runner (a subclass too: its
    packs may not honour `stop`) is requeued by submitit at once, and its runs resume from
    their last checkpoints."""

    def __init__(self, runner: Runner, job: Sequence[Task], pack: int | str) -> None:
        self.runner, self.job, self.pack = runner, list(job), pack

    def __call__(self) -> list[Outcome]:
        if type(self.runner) is not EngineRunner:
            return run_job(self.runner, self.job, self.pack)
        sig = getattr(signal, "SIG" + require_extra("submitit").JobEnvironment.USR_SIG)
        requeue = signal.getsignal(sig)  # submitit's: calls `checkpoint`, requeues, exits
        asked: list[int] = []
        signal.signal(sig, lambda signum, frame: asked.append(signum))
        runner = copy.copy(self.runner)
        runner.stop = functools.partial(bool, asked)
        try:
            return run_job(runner, self.job, self.pack)
        except Interrupted:
            log.info("preempted or out of time: the pack stopped with checkpoints; requeueing")
            if callable(requeue):
                requeue(sig, None)
            raise
        finally:
            signal.signal(sig, requeue)

    def checkpoint(self) -> Any:
        """submitit's hook: the same job again (its runs resume from their checkpoints)."""
        return require_extra("submitit").helpers.DelayedSubmission(self)


def run_submitit(
    jobs: Sequence[Sequence[Task]], runner: Runner, on_done: OnDone, settings: Settings
) -> list[Outcome]:
    """One Slurm job array (submitit.AutoExecutor), one job per pack; cluster='local' runs it on
    this machine. Preempted or timed-out jobs requeue themselves (SlurmJob)."""
    submitit = require_extra("submitit")
    opts = settings.options
    folder = Path(opts["folder"] or settings.work_dir / "submitit")
    requeues = {f"{c}_max_num_timeout": opts["max_timeouts"] for c in ("slurm", "local")}
    executor = submitit.AutoExecutor(folder=folder, cluster=opts["cluster"], **requeues)
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
    if opts["signal_delay_s"] is not None:
        params["slurm_signal_delay_s"] = opts["signal_delay_s"]
        params["local_signal_delay_s"] = opts["signal_delay_s"]
    executor.update_parameters(**params)
    with executor.batch():
        submitted = [executor.submit(SlurmJob(runner, job, settings.pack)) for job in jobs]
    index = {id(job): i for i, job in enumerate(submitted)}
    completed = submitit.helpers.as_completed(submitted, poll_frequency=opts["poll_s"])
    return gather(((index[id(job)], job.result) for job in completed), jobs, on_done)


def _ray_completed(ray: Any, refs: list[Any]) -> Iterator[tuple[int, Callable[[], list[Outcome]]]]:
    index = {ref: i for i, ref in enumerate(refs)}
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for ref in done:
            yield index[ref], functools.partial(ray.get, ref)


def run_ray(
    jobs: Sequence[Sequence[Task]], runner: Runner, on_done: OnDone, settings: Settings
) -> list[Outcome]:
    """Ray tasks, one per pack, each with `gpus_per_run` GPUs and `cpus_per_run` CPUs; joins a
    running Ray (ray.init by the caller) or starts and stops one."""
    ray = require_extra("ray")
    opts = settings.options
    started = not ray.is_initialized()
    if started:
        ray.init(address=opts["address"], include_dashboard=False)
    try:
        remote = ray.remote(num_cpus=opts["cpus_per_run"], num_gpus=opts["gpus_per_run"])
        refs = [remote(run_job).remote(runner, job, settings.pack) for job in jobs]
        return gather(_ray_completed(ray, refs), jobs, on_done)
    finally:
        if started:
            ray.shutdown()


EXECUTORS: dict[str, Callable[..., list[Outcome]]] = {
    "inline": run_inline,
    "local": run_local,
    "submitit": run_submitit,
    "ray": run_ray,
}
# Options per executor and their defaults (units in the names). A job is one pack: the GPUs
# and CPUs "per run" are per job, shared by the runs of its pack.
OPTIONS: dict[str, dict[str, Any]] = {
    "inline": {},
    "local": {"gpus": None},  # GPU indices, one pinned worker each (list one twice for two)
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
        "max_timeouts": 3,  # requeues after a time limit (preemptions do not count)
        # the USR2 this long before the time limit (submitit's default: 90); the pack stops at
        # its next epoch end, so it should exceed one epoch
        "signal_delay_s": None,
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


def _check_gpus(gpus: Any) -> tuple[int, ...] | None:
    if gpus is None:
        return None
    given = [g for g in gpus.split(",") if g.strip()] if isinstance(gpus, str) else gpus
    try:
        out = tuple(int(g) for g in given)
    except (TypeError, ValueError):
        out = ()
    if not out or min(out) < 0:
        raise ConfigError(
            f"gpus={gpus!r} is not a list of GPU indices; e.g. --gpus 0,1,2,3 (one worker each)"
        )
    return out


def _check_submitit(opts: Mapping[str, Any]) -> None:
    if opts["cluster"] not in (None, "slurm", "local", "debug"):
        raise ConfigError(
            f"cluster={opts['cluster']!r} is unknown; use slurm, local or debug (default: "
            "Slurm where it is installed, else this machine)"
        )
    for key in ("max_timeouts", "signal_delay_s"):
        value = opts[key]
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            raise ConfigError(f"{key}={value!r} must be an integer >= 0")


def make_settings(
    executor: str,
    *,
    workers: int,
    pack: int | str,
    options: Mapping[str, Any] | None,
    work_dir: Path,
) -> Settings:
    """Validate an executor choice and its options before anything runs."""
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; use one of {', '.join(EXECUTORS)}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers={workers!r} must be a positive integer")
    if pack != AUTO and (isinstance(pack, bool) or not isinstance(pack, int) or pack < 1):
        raise ConfigError(f"pack={pack!r} must be a positive integer (1 = no packing) or {AUTO!r}")
    allowed = OPTIONS[executor]
    unknown = sorted(set(options or {}) - set(allowed))
    if unknown:
        valid = ", ".join(allowed) or "none"
        raise ConfigError(
            f"executor {executor!r} has no option(s) {', '.join(unknown)}; valid options: {valid}"
        )
    filled = allowed | dict(options or {})
    if executor == "local":
        filled["gpus"] = _check_gpus(filled["gpus"])
    if executor == "submitit":
        _check_submitit(filled)
    if executor in _EXTRAS:
        require_extra(executor)
    return Settings(workers, pack, filled, work_dir)


def parallel_jobs(executor: str, settings: Settings) -> int:
    """How many jobs the executor runs at once (as far as spherelab decides it)."""
    if executor == "inline":
        return 1
    if executor == "local":
        return local_workers(settings)
    if executor == "submitit":
        return int(settings.options["array_parallelism"] or settings.workers)
    return settings.workers


def plan_jobs(executor: str, tasks: Sequence[Task], settings: Settings) -> list[list[Task]]:
    """The jobs (packs of tasks) the executor would launch for these tasks."""
    return pack_groups(tasks, settings.pack, parallel_jobs(executor, settings))


def run_tasks(
    executor: str, tasks: Sequence[Task], runner: Runner, on_done: OnDone, settings: Settings
) -> list[Outcome]:
    """Run tasks with the named executor (settings from make_settings), one job per pack."""
    if not tasks:
        return []
    jobs = plan_jobs(executor, tasks, settings)
    by_dir = {o.run_dir: o for o in EXECUTORS[executor](jobs, runner, on_done, settings)}
    return [by_dir[t.run_dir] for t in tasks]
