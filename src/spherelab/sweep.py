"""ELR sweeps: the grid spec, its expansion into runs, running/resuming/refining, summary.csv.

A sweep directory holds sweep.json (the spec and any refined ELRs), runs/<name>/ (one run per
point) and summary.csv (one row per run). Run directory names are for people only: the values
live in each config.json and in the summary columns, and nothing parses a name back.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from spherelab.config import (
    Config,
    ConfigError,
    apply_overrides,
    from_dict,
)
from spherelab.executors import (
    Outcome,
    Runner,
    Settings,
    Task,
    make_settings,
    one_line_error,
    run_tasks,
)
from spherelab.regimes import FINAL_STATUSES
from spherelab.sweep_spec import (  # noqa: F401 - the public sweep API lives here too
    SAME_ELR,
    Point,
    SweepSpec,
    _axes_key,
    axis_combos,
    expand,
    load_spec,
    parse_elrs,
    parse_seeds,
    run_name,
    spec_from_dict,
)

log = logging.getLogger("spherelab")

METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "eff_grad_norm", "si_norm")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _open_sweep_dir(spec: SweepSpec, out: Path) -> list[list[dict[str, Any]]]:
    """Check an existing sweep.json against spec (a rerun may only add points); its refinement
    rounds (each a list of {"axes", "elr"} entries)."""
    stored = _read_json(out / "sweep.json")
    if stored is None:
        if (out / "sweep.json").exists():
            raise ConfigError(f"{out / 'sweep.json'} is unreadable; use a new --out directory")
        return []
    old = spec_from_dict(stored["spec"], source=str(out / "sweep.json"))
    for key in ("model", "dataset", "epochs", "overrides"):
        if getattr(old, key) != getattr(spec, key):
            raise ConfigError(
                f"{out} holds a sweep with {key}={getattr(old, key)!r}, not "
                f"{getattr(spec, key)!r}; use a new --out directory"
            )
    if list(old.axes) != list(spec.axes):
        raise ConfigError(
            f"{out} holds a sweep with axes {list(old.axes)}, not "
            f"{list(spec.axes)}; use a new --out directory"
        )
    pairs = [("elrs", old.elrs, spec.elrs), ("seeds", old.seeds, spec.seeds)]
    for label, before, now in pairs + [(k, old.axes[k], spec.axes[k]) for k in old.axes]:
        dropped = [v for v in before if v not in now]
        if dropped:
            raise ConfigError(
                f"{out} already holds {label} {dropped} that this spec drops; a "
                "rerun may only add points: keep them or use a new --out directory"
            )
    return [list(round_) for round_ in stored.get("refined", [])]


def _write_sweep_json(out: Path, spec: SweepSpec, rounds: list[list[dict[str, Any]]]) -> None:
    payload = {"spec": spec.to_dict(), "refined": rounds}
    tmp = out / "sweep.json.tmp"
    tmp.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    tmp.replace(out / "sweep.json")


def _is_done(run_dir: Path, cfg: Config) -> bool:
    """A finished run of this very config (the device a worker picked does not count)."""
    summary, saved = _read_json(run_dir / "summary.json"), _read_json(run_dir / "config.json")
    if summary is None or saved is None or summary.get("status") not in FINAL_STATUSES:
        return False
    try:
        saved_cfg = from_dict(saved)
    except ConfigError:
        return False
    return apply_overrides(saved_cfg, {"train.device": cfg.train.device}) == cfg


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    return str(value)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else str(value)


def summary_row(
    point: Point, summary: Mapping[str, Any] | None, error: str | None
) -> dict[str, str]:
    """One summary.csv row (all cells as text, exactly as written)."""
    s = summary or {}
    row = {
        "elr": point.elr,
        "seed": point.seed,
        **point.axes,
        "regime": s.get("regime"),
        "status": s.get("status", "failed" if error else "unfinished"),
        **{m: s.get(m) for m in METRICS},
        "epochs": s.get("epoch"),
        # the ELR at the end: the setting on the sphere, measured lr/||w||^2 in conventional mode
        "final_elr": s.get("elr"),
        "run_dir": point.run_dir,
        "error": error,
    }
    return {key: _cell(value) for key, value in row.items()}


def read_summary(path: str | Path) -> list[dict[str, str]]:
    with Path(path).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _write_summary(out: Path, rows: list[dict[str, str]]) -> Path:
    path, tmp = out / "summary.csv", out / "summary.csv.tmp"
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
    return path


def relabel_sweep(sweep_dir: str | Path) -> Path:
    """Re-classify every finished run of a sweep with the current classifier; rewrite each
    summary.json and the regime column of summary.csv."""
    from spherelab.runfiles import relabel_run

    out = Path(sweep_dir)
    rows = read_summary(out / "summary.csv")
    for row in rows:
        if row["status"] in FINAL_STATUSES:
            row["regime"] = relabel_run(out / row["run_dir"])["regime"]
    return _write_summary(out, rows)


def boundaries_by_group(
    rows: Sequence[Mapping[str, str]], axis_keys: Sequence[str]
) -> dict[tuple[str, ...], list[Any]]:
    """Regime boundaries (spherelab.regimes.Boundary) per combination of the other axes."""
    from spherelab.regimes import estimate_boundaries  # lazy: written independently

    groups: dict[tuple[str, ...], list[Mapping[str, str]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in axis_keys), []).append(row)
    out = {}
    for key, group in groups.items():  # several seeds per ELR: regimes takes the majority
        done = [r for r in group if r["status"] in FINAL_STATUSES and r["regime"]]
        out[key] = list(
            estimate_boundaries([float(r["elr"]) for r in done], [r["regime"] for r in done])
        )
    return out


def _refine_points(
    spec: SweepSpec, points: Sequence[Point], rows: Sequence[Mapping[str, str]]
) -> list[dict[str, Any]]:
    """New {"axes", "elr"} entries: geometric midpoints of every boundary interval."""
    from spherelab.regimes import refine_points  # lazy: written independently

    combos = {tuple(_cell(p.axes[k]) for k in spec.axes): p.axes for p in points}
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

    def run(self, points: Sequence[Point]) -> None:
        pending = [p for p in points if not _is_done(self.out / p.run_dir, p.config)]
        if len(pending) < len(points):
            log.info("skipping %d finished runs", len(points) - len(pending))
        by_dir = {str(self.out / p.run_dir): p for p in pending}
        tasks = [Task(p.config, run_dir) for run_dir, p in by_dir.items()]
        done = itertools.count(1)

        def on_done(outcome: Outcome) -> None:
            self.outcomes[outcome.run_dir] = outcome
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

        run_tasks(self.executor, tasks, self.runner, on_done, self.settings)

    def rows(self, points: Sequence[Point]) -> list[dict[str, str]]:
        rows = []
        for p in points:
            outcome = self.outcomes.get(str(self.out / p.run_dir))
            if outcome is None:
                rows.append(summary_row(p, _read_json(self.out / p.run_dir / "summary.json"), None))
            else:
                rows.append(summary_row(p, outcome.summary, outcome.error))
        return rows


def _write_report(out: Path) -> None:
    try:
        from spherelab.report import write_report  # lazy: written independently

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
    pack: int = 1,
    report: bool = True,
) -> Path:
    """Run (or resume, or extend) a sweep in out_dir; returns the path of summary.csv.

    executor: inline | local | submitit | ray (executor_options: see executors.OPTIONS);
    workers: parallel processes (local) or the default Slurm array throttle (submitit).
    refine: rounds of boundary refinement after the grid (new ELRs at the geometric midpoints
    of each boundary interval, for every seed); rounds already done in out_dir count.
    pack: runs per ensemble module (inline only; the hook is executors.run_pack).
    runner(config, run_dir) -> summary: defaults to executors.train_runner (spherelab.engine).
    Every input is validated before anything runs; a failing run is recorded, not raised.
    """
    from spherelab import executors  # looked up at call time so tests can swap the runner

    out = Path(out_dir).absolute()  # workers may run in another working directory
    if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
        raise ConfigError(f"refine={refine!r} must be an integer >= 0 (rounds of refinement)")
    settings = make_settings(
        executor, workers=workers, pack=pack, options=executor_options, work_dir=out
    )
    if refine:  # fail now, not after the grid has run
        try:
            import spherelab.regimes  # noqa: F401
        except ImportError as err:
            raise ConfigError(
                f"refine={refine} needs spherelab.regimes ({err}); run without --refine"
            ) from None
    rounds = _open_sweep_dir(spec, out)
    points = expand(spec, [entry for round_ in rounds for entry in round_])  # validates all
    out.mkdir(parents=True, exist_ok=True)
    _write_sweep_json(out, spec, rounds)
    session = _Session(out, runner or executors.train_runner, executor, settings, progress)
    session.run(points)
    path = _write_summary(out, session.rows(points))
    while len(rounds) < refine:  # rounds already in sweep.json count, so a rerun is a no-op
        new = _refine_points(spec, points, session.rows(points))
        if not new:
            log.info("refinement: no boundary interval left to split")
            break
        rounds.append(new)
        log.info("refinement round %d: %d new ELRs", len(rounds), len(new))
        points = expand(spec, [entry for round_ in rounds for entry in round_])
        _write_sweep_json(out, spec, rounds)
        session.run(points)
        path = _write_summary(out, session.rows(points))
    if report:
        _write_report(out)
    return path
