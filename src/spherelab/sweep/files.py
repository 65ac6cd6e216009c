"""A sweep directory's files: sweep.json (spec + refinement rounds) and summary.csv (one row a run).

Also reads each run's summary.json / config.json to tell a finished run of a given config, so a
rerun of a sweep skips it. Run directory names are for people only: nothing here parses one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spherelab.config import Config, ConfigError, apply_overrides, from_dict
from spherelab.io import atomic_write_text, dumps, read_csv, read_json_dict, write_csv
from spherelab.regimes import FINAL_STATUSES
from spherelab.report.data import LYAPUNOV_COLUMNS, SUMMARY_METRICS
from spherelab.sweep.spec import Point, SweepSpec, spec_from_dict


def open_sweep_dir(spec: SweepSpec, out: Path) -> list[list[dict[str, Any]]]:
    """Check an existing sweep.json against spec (a rerun may only add points); return its
    refinement rounds (each a list of {"axes", "elr"} entries; [] for a new sweep)."""
    stored = read_json_dict(out / "sweep.json")
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


def write_sweep_json(out: Path, spec: SweepSpec, rounds: list[list[dict[str, Any]]]) -> None:
    """Write out/sweep.json (atomically): the spec and its refinement rounds."""
    payload = {"spec": spec.to_dict(), "refined": rounds}
    atomic_write_text(out / "sweep.json", dumps(payload, indent=2))


def is_done(run_dir: Path, cfg: Config) -> bool:
    """Whether run_dir holds a finished run of this very config (the device a worker picked
    does not count), so a rerun of the sweep can skip it."""
    summary, saved = (
        read_json_dict(run_dir / "summary.json"),
        read_json_dict(run_dir / "config.json"),
    )
    if summary is None or saved is None or summary.get("status") not in FINAL_STATUSES:
        return False
    try:
        saved_cfg = from_dict(saved)
    except ConfigError:
        return False
    return apply_overrides(saved_cfg, {"train.device": cfg.train.device}) == cfg


def csv_cell(value: Any) -> str:
    """A value as summary.csv holds it: "" for None, JSON for a list or tuple, else str()."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    return str(value)


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
        **{m: s.get(m) for m in SUMMARY_METRICS},
        "epochs": s.get("epoch"),
        # the ELR at the end: the setting on the sphere, measured lr/||w||^2 in conventional mode
        "final_elr": s.get("elr"),
        **{k: s.get(k) for k in LYAPUNOV_COLUMNS},
        "run_dir": point.run_dir,
        "error": error,
    }
    return {key: csv_cell(value) for key, value in row.items()}


def read_summary(path: str | Path) -> list[dict[str, str]]:
    """The rows of a summary.csv, every cell as text (a damaged file: a ValueError that says
    how to rewrite it)."""
    try:
        return read_csv(path)
    except ValueError as err:
        raise ValueError(
            f"{err}; for a sweep, rerun its sweep command with the same --out, which rewrites "
            "summary.csv from the run directories"
        ) from None


def write_summary(out: Path, rows: list[dict[str, str]]) -> Path:
    """Write out/summary.csv (atomically) with the columns of the first row; returns its path."""
    path = out / "summary.csv"
    write_csv(path, rows, list(rows[0]))
    return path


def write_run_summary(run_dir: Path) -> Path:
    """A one-row summary.csv for a lone run directory (e.g. one from ``import-official``), so
    the sweep report and relabelling read it as a sweep of one run; returns its path."""
    summary, saved = (
        read_json_dict(run_dir / "summary.json"),
        read_json_dict(run_dir / "config.json"),
    )
    if summary is None or saved is None:
        raise ValueError(
            f"{run_dir} holds neither summary.csv (a sweep) nor config.json and summary.json "
            "(a finished run); pass a sweep directory or a finished run directory"
        )
    cfg = from_dict(saved)
    point = Point(cfg, ".", cfg.optim.elr, cfg.train.seed, {})
    return write_summary(run_dir, [summary_row(point, summary, None) | {"run_dir": "."}])
