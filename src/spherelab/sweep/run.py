"""ELR sweeps: run, resume, extend and refine a grid of runs; relabel a finished sweep.

A sweep directory holds sweep.json (the spec and any refined ELRs), runs/<name>/ (one run per
point) and summary.csv (one row per run). Run directory names are for people only: the values
live in each config.json and in the summary columns, and nothing parses a name back. The spec
and its expansion live in ``spherelab.sweep.spec``, the reading and writing of sweep.json and
summary.csv in ``spherelab.sweep.files``.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from spherelab.config import ConfigError
from spherelab.io import read_json_dict, write_json
from spherelab.lock import hold
from spherelab.regimes import FINAL_STATUSES, Boundary, refine_points, sweep_boundaries
from spherelab.report import write_report
from spherelab.sweep import executors
from spherelab.sweep.executors import EngineRunner, check_pinnable, make_settings, run_tasks
from spherelab.sweep.files import (
    csv_cell,
    is_done,
    open_sweep_dir,
    read_summary,
    summary_row,
    write_summary,
    write_sweep_json,
)
from spherelab.sweep.progress import SweepProgressFn, SweepTracker
from spherelab.sweep.spec import (
    SAME_ELR,
    Point,
    SweepSpec,
    expand,
)
from spherelab.sweep.tasks import Outcome, Runner, Settings, Task, one_line_error
from spherelab.train.loop import ProgressFn
from spherelab.train.run_files import relabelled_summary

log = logging.getLogger("spherelab")


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else str(value)


def relabel_sweep(sweep_dir: str | Path) -> Path:
    """Re-classify every finished run of a sweep with the current classifier; rewrite each
    summary.json and the regime column of summary.csv.

    Every run is re-classified before anything is written, so a run whose records cannot be
    trusted (ValueError, naming its file) leaves every file as it was; each file is replaced
    atomically."""
    out = Path(sweep_dir)
    rows = read_summary(out / "summary.csv")
    new = {
        i: relabelled_summary(out / row["run_dir"])
        for i, row in enumerate(rows)
        if row["status"] in FINAL_STATUSES
    }
    for i, summary in new.items():
        write_json(out / rows[i]["run_dir"] / "summary.json", summary)
        rows[i]["regime"] = csv_cell(summary["regime"])
    return write_summary(out, rows)


def boundaries_by_group(
    rows: Sequence[Mapping[str, str]], axis_keys: Sequence[str]
) -> dict[tuple[str, ...], list[Boundary]]:
    """Regime boundaries (spherelab.regimes.sweep_boundaries) per combination of the other
    axes, keyed by the axes' summary.csv cells."""
    groups: dict[tuple[str, ...], list[Mapping[str, str]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in axis_keys), []).append(row)
    return {key: sweep_boundaries(group) for key, group in groups.items()}


def _refine_points(
    spec: SweepSpec, points: Sequence[Point], rows: Sequence[Mapping[str, str]]
) -> list[dict[str, Any]]:
    """New {"axes", "elr"} entries: geometric midpoints of every boundary interval."""

    combos = {tuple(csv_cell(p.axes[k]) for k in spec.axes): p.axes for p in points}
    new = []
    for key, boundaries in boundaries_by_group(rows, list(spec.axes)).items():
        known = [p.elr for p in points if dict(p.axes) == dict(combos[key])]
        for elr in refine_points(boundaries):
            if not any(math.isclose(elr, k, rel_tol=SAME_ELR) for k in known):
                new.append({"axes": dict(combos[key]), "elr": float(elr)})
                known.append(float(elr))
    return new


class _Session:
    """One call of run_sweep: runs pending points, remembers outcomes, writes summary.csv."""

    def __init__(
        self, out: Path, runner: Runner, executor: str, settings: Settings, progress: bool
    ) -> None:
        self.out, self.runner, self.executor = out, runner, executor
        self.settings, self.progress = settings, progress
        self.outcomes: dict[str, Outcome] = {}
        self.tracker = SweepTracker()
        self.watch: SweepProgressFn | None = None  # gets the tracker on every change

    def run(self, points: Sequence[Point]) -> None:
        pending = [p for p in points if not is_done(self.out / p.run_dir, p.config)]
        if len(pending) < len(points):
            log.info("skipping %d finished runs", len(points) - len(pending))
        by_dir = {str(self.out / p.run_dir): p for p in pending}
        tasks = [Task(p.config, run_dir) for run_dir, p in by_dir.items()]
        done = itertools.count(1)
        tracker = self.tracker
        tracker.start_round(by_dir)
        if self.watch is not None:
            self.watch(tracker)

        def on_done(outcome: Outcome) -> None:
            self.outcomes[outcome.run_dir] = outcome
            tracker.add(outcome)
            point, s = by_dir[outcome.run_dir], outcome.summary or {}
            what = (
                f"{s.get('regime')} train_loss={_short(s.get('train_loss'))}"
                if outcome.error is None
                else f"FAILED {outcome.error}"
            )
            level = logging.INFO if self.progress else logging.DEBUG
            log.log(
                logging.WARNING if outcome.error else level,
                "[%d/%d] elr=%.4g seed=%d %s-> %s (%.1f s)",
                next(done),
                len(tasks),
                point.elr,
                point.seed,
                "".join(f"{k}={v} " for k, v in point.axes.items()),
                what,
                outcome.seconds,
            )
            if self.watch is not None:
                self.watch(tracker)

        run_tasks(self.executor, tasks, self.runner, on_done, self.settings)

    def rows(self, points: Sequence[Point]) -> list[dict[str, str]]:
        rows = []
        for p in points:
            outcome = self.outcomes.get(str(self.out / p.run_dir))
            if outcome is None:
                rows.append(
                    summary_row(p, read_json_dict(self.out / p.run_dir / "summary.json"), None)
                )
            else:
                rows.append(summary_row(p, outcome.summary, outcome.error))
        return rows


def _write_report(out: Path) -> None:
    try:
        log.info("report: %s", write_report(out))
    except Exception as err:  # a broken report must not lose a finished sweep
        log.warning(
            "the report failed (%s); the sweep is complete, retry with `spherelab report %s`",
            one_line_error(err),
            out,
        )


def run_sweep(
    spec: SweepSpec,
    out_dir: str | Path,
    *,
    executor: str = "inline",
    workers: int = 2,
    refine: int = 0,
    runner: Runner | None = None,
    progress: bool = True,
    executor_options: Mapping[str, Any] | None = None,
    pack: int | str = "auto",
    report: bool = True,
    train_progress: ProgressFn | None = None,
    sweep_progress: SweepProgressFn | None = None,
) -> Path:
    """Run (or resume, or extend) a sweep in out_dir; returns the path of summary.csv.

    executor: inline | local | submitit | ray (executor_options: see executors.OPTIONS);
    workers: parallel jobs: processes (local; executor_options gpus=[0, 1, ...] runs one per
    GPU instead) or the default Slurm array throttle (submitit).
    refine: rounds of boundary refinement after the grid (new ELRs at the geometric midpoints
    of each boundary interval, for every seed); rounds already done in out_dir count.
    pack: runs per job and ensemble module, on every executor (sweep.packing); "auto" packs
    up to 16 runs, as one module where that is faster on the device the job runs on
    (sweep.packing.packing_pays: any model on CUDA, MLPs on a CPU), 1 never packs.
    runner(config, run_dir) -> summary: defaults to executors.train_runner (spherelab.train).
    train_progress: called with the engine's progress dicts inside every run or pack (the
    inline executor with the default engine runner; the CLI shows them on stderr).
    sweep_progress: called in this process with a SweepTracker (spherelab.sweep.
    progress: runs done, failed, running, regimes) when a round starts and after every
    finished run, on every executor.
    Every input is validated before anything runs; a failing run is recorded, not raised.
    """
    out = Path(out_dir).absolute()  # workers may run in another working directory
    if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
        raise ConfigError(f"refine={refine!r} must be an integer >= 0 (rounds of refinement)")
    settings = make_settings(
        executor, workers=workers, pack=pack, options=executor_options, work_dir=out
    )
    check_pinnable(settings, (p.config for p in expand(spec)))  # refinement adds ELRs only
    # The sweep directory is locked at this level only: each run directory is locked by the
    # process that trains it, so the executor's workers are never blocked by their own sweep.
    with hold(out, "sweep"):
        rounds = open_sweep_dir(spec, out)
        points = expand(spec, [entry for round_ in rounds for entry in round_])  # validates all
        write_sweep_json(out, spec, rounds)
        # executors.train_runner is read now, not at import: tests swap it for a fake runner
        runner = runner or executors.train_runner
        if train_progress is not None and executor == "inline" and isinstance(runner, EngineRunner):
            runner = EngineRunner(train_progress)
        session = _Session(out, runner, executor, settings, progress)
        session.watch = sweep_progress
        session.run(points)
        path = write_summary(out, session.rows(points))
        while len(rounds) < refine:  # rounds already in sweep.json count, so a rerun is a no-op
            new = _refine_points(spec, points, session.rows(points))
            if not new:
                log.info("refinement: no boundary interval left to split")
                break
            rounds.append(new)
            log.info("refinement round %d: %d new ELRs", len(rounds), len(new))
            points = expand(spec, [entry for round_ in rounds for entry in round_])
            write_sweep_json(out, spec, rounds)
            session.run(points)
            path = write_summary(out, session.rows(points))
        if report:
            _write_report(out)
        return path
