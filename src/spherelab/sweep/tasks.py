"""What every executor shares: a Task, its Outcome, the Settings, and running one task safely.

A runner `runner(config, run_dir) -> summary dict` trains one run; `execute` turns an exception
into a failed Outcome (one line: type and message) so one bad run never stops a sweep, and
`gather` does the same for infrastructure errors (a killed worker, a lost job). Executors run
jobs: one pack of tasks each (spherelab.sweep.packing).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spherelab.config import Config
from spherelab.io import os_error_line

log = logging.getLogger("spherelab")

Runner = Callable[[Config, str], Mapping[str, Any]]
OnDone = Callable[["Outcome"], None]


@dataclass(frozen=True)
class Task:
    config: Config
    run_dir: str  # absolute path of the run directory


@dataclass(frozen=True)
class Outcome:
    run_dir: str
    summary: dict[str, Any] | None  # the runner's summary; None when the run failed
    error: str | None  # one line: exception type and message
    seconds: float  # wall time of the run (for progress logs only, never in summary.csv)


@dataclass(frozen=True)
class Settings:
    workers: int = 2  # parallel jobs (local: processes; submitit: default array throttle)
    pack: int | str = 1  # runs per job and ensemble module, or "auto" (see packing.pack_groups)
    options: Mapping[str, Any] = field(default_factory=dict)  # validated, defaults filled in
    work_dir: Path = Path(".")  # the sweep directory (submitit logs go below it)


def one_line_error(err: BaseException) -> str:
    text = os_error_line(err) if isinstance(err, OSError) else " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def execute(runner: Runner, task: Task) -> Outcome:
    """Run one task; an exception becomes a failed Outcome instead of stopping the sweep."""
    start = time.perf_counter()
    try:
        summary = dict(runner(task.config, task.run_dir))
    except Exception as err:
        log.debug("run %s failed", task.run_dir, exc_info=True)
        return Outcome(task.run_dir, None, one_line_error(err), time.perf_counter() - start)
    return Outcome(task.run_dir, summary, None, time.perf_counter() - start)


def gather(
    pairs: Iterable[tuple[int, Callable[[], Sequence[Outcome]]]],
    jobs: Sequence[Sequence[Task]],
    on_done: OnDone,
) -> list[Outcome]:
    """Collect the outcomes of (job index, result getter) pairs as the jobs complete (a job is
    one pack of tasks), calling on_done on each outcome; an infrastructure error (a killed
    worker, a lost job) fails that job's tasks instead of the sweep."""
    outcomes: list[Outcome] = []
    for index, get in pairs:
        try:
            got = list(get())
        except Exception as err:  # a lost job is failed runs, not a crash
            error = one_line_error(err)
            got = [Outcome(task.run_dir, None, error, 0.0) for task in jobs[index]]
        for outcome in got:
            on_done(outcome)
            outcomes.append(outcome)
    return outcomes
