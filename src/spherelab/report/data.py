"""Load an ELR sweep directory into memory (Sweep): summary rows with numbers parsed, each run's
config and metrics/diagnostics records.

Reads only files (summary.csv, sweep.json, each run's config.json / metrics.jsonl /
diagnostics.jsonl) and never imports torch; unreadable run files are skipped with a warning.
Used by the sweep report and by analyses built on a sweep (the regime lens, conventional grids).
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spherelab.io import read_json_dict, read_jsonl
from spherelab.regimes import distinct_records

log = logging.getLogger("spherelab")

# summary.csv (docs/run_files.md#summarycsv): each run's final metrics, taken from its
# summary.json by spherelab.sweep.files; a column added here is written and read alike.
SUMMARY_METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "eff_grad_norm", "si_norm")
# Written by `spherelab diagnose --what lyapunov` / `sweep --lyapunov` (docs/chaos.md); empty
# cells for runs where λ was not measured.
LYAPUNOV_COLUMNS = ("lyapunov", "lyapunov_err", "step_angle_mean")
FLOAT_COLUMNS = ("elr", *SUMMARY_METRICS, "final_elr", *LYAPUNOV_COLUMNS)
INT_COLUMNS = ("seed", "epochs")
TABLE_COLUMNS = ("elr", "seed", "regime", "status", *SUMMARY_METRICS, "epochs", "error")
# Columns that are results, not sweep axes (a sweep's axes are its other columns).
CONTRACT_COLUMNS = {*TABLE_COLUMNS, "run_dir", "final_elr", *LYAPUNOV_COLUMNS}


@dataclass(frozen=True)
class RunData:
    """One run of a sweep: its ELR, seed, regime and the records of its run directory."""

    elr: float
    seed: int
    regime: str  # convergence | chaotic_equilibrium | divergence | "" (unclassified)
    records: list[dict[str, Any]]  # metrics.jsonl, one dict per evaluation, epoch 0 = init
    diagnostics: list[dict[str, Any]] = field(default_factory=list)  # diagnostics.jsonl
    status: str = "finished"
    run_dir: str = ""  # relative to the sweep directory (for grouping; never parsed)


@dataclass
class Sweep:
    """A sweep directory in memory: summary rows, loaded runs, spec and the runs' configs."""

    root: Path
    rows: list[dict[str, Any]]  # summary.csv, numbers parsed, sorted by (elr, seed)
    runs: list[RunData]  # runs whose metrics.jsonl could be read
    spec: dict[str, Any] | None = None  # sweep.json, if present
    configs: list[dict[str, Any]] = field(default_factory=list)  # each run's config.json
    axes: list[str] = field(default_factory=list)  # extra summary columns: the sweep's axes

    def groups(self) -> list[tuple[dict[str, str], list[dict[str, Any]], list[RunData]]]:
        """(axis values, rows, runs) per combination of the extra axes; one group if none."""
        keyed: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in self.rows:
            keyed.setdefault(tuple(str(row.get(a, "")) for a in self.axes), []).append(row)
        out = []
        for key, rows in keyed.items():
            dirs = {r.get("run_dir") for r in rows}
            out.append(
                (dict(zip(self.axes, key)), rows, [run for run in self.runs if run.run_dir in dirs])
            )
        return out


def _parse_row(raw: dict[str, str]) -> dict[str, Any]:
    row: dict[str, Any] = {k: (v or "").strip() for k, v in raw.items() if k is not None}
    for key in FLOAT_COLUMNS:
        try:
            row[key] = float(row.get(key, ""))
        except ValueError:  # empty for failed runs
            row[key] = math.nan
    for key in INT_COLUMNS:
        try:
            row[key] = int(float(row.get(key, "")))
        except (ValueError, OverflowError):
            row[key] = None
    return row


def _load_run(root: Path, row: dict[str, Any]) -> tuple[RunData | None, dict[str, Any] | None]:
    """The run of one summary row (None if its metrics cannot be read) and its config."""
    failed = row.get("status") == "failed"
    if not row.get("run_dir"):
        if not failed:
            log.warning(
                "summary row elr=%s seed=%s has no run_dir; skipping it", row["elr"], row["seed"]
            )
        return None, None
    run_dir = root / row["run_dir"]
    config = (
        read_json_dict(run_dir / "config.json", warn=True)
        if (run_dir / "config.json").exists()
        else None
    )
    try:
        if not (run_dir / "metrics.jsonl").is_file():
            raise FileNotFoundError(f"no {run_dir / 'metrics.jsonl'}")
        path = run_dir / "metrics.jsonl"
        records = distinct_records(read_jsonl(path), path)  # drops a torn last line, repeats
    except (OSError, ValueError) as exc:  # missing, unreadable or damaged
        (log.info if failed else log.warning)("cannot read metrics of %s (%s)", run_dir, exc)
        return None, config
    try:
        diagnostics = read_jsonl(run_dir / "diagnostics.jsonl")  # [] when there is none
    except (OSError, ValueError) as exc:
        log.warning("cannot read diagnostics of %s (%s); drawing the run without", run_dir, exc)
        diagnostics = []
    run = RunData(
        elr=row["elr"],
        seed=row["seed"] or 0,
        regime=row.get("regime", ""),
        records=records,
        diagnostics=diagnostics,
        status=row.get("status", ""),
        run_dir=row["run_dir"],
    )
    return (run if records else None), config


def load_sweep(sweep_dir: str | Path) -> Sweep:
    """Read a sweep directory; unreadable run files are skipped with a warning."""
    root = Path(sweep_dir)
    summary = root / "summary.csv"
    if not summary.is_file():
        raise ValueError(
            f"no summary.csv in sweep directory {str(root)!r}; pass the "
            "directory a sweep wrote (it holds summary.csv and run dirs)"
        )
    with summary.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = [_parse_row(raw) for raw in reader]
        axes = [c for c in reader.fieldnames or () if c not in CONTRACT_COLUMNS]
    rows.sort(
        key=lambda r: (
            r["elr"] if not math.isnan(r["elr"]) else math.inf,
            r["seed"] if r["seed"] is not None else -1,
        )
    )
    sweep = Sweep(root=root, rows=rows, runs=[], axes=axes)
    if (root / "sweep.json").exists():
        sweep.spec = read_json_dict(root / "sweep.json", warn=True)
    for row in rows:
        run, config = _load_run(root, row)
        if run is not None:
            sweep.runs.append(run)
        if config is not None:
            sweep.configs.append(config)
    log.info("loaded sweep %s: %d rows, %d runs with metrics", root, len(rows), len(sweep.runs))
    return sweep
