"""Write an ELR sweep's figures, boundaries.json and one report.html.

Reads only files (loaded by ``spherelab.report.data``) and never imports torch, so a report is
fast and works without it. Boundaries and the regime map's shading both come from
``spherelab.regimes`` (``sweep_boundaries``, ``sweep_labels``), so they always agree.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import sys
from collections import Counter
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from spherelab.chaos_boundary import per_elr
from spherelab.io import atomic_write_text, dumps
from spherelab.regimes import NO_REGIME, Boundary, sweep_boundaries
from spherelab.report import figures as plots
from spherelab.report.data import (
    TABLE_COLUMNS,
    RunData,
    Sweep,
    load_sweep,
)
from spherelab.report.html import Page
from spherelab.report.style import save_figure

log = logging.getLogger("spherelab")

PACKAGES = ("torch", "numpy", "matplotlib", "spherelab")
CAPTIONS = {
    "figure1": (
        "Figure 1 replica: train loss, test error and mean effective gradient norm "
        "against epoch, one colour per ELR."
    ),
    "grad_vs_loss": (
        "Effective gradient norm against train loss; stars mark the common start (init)."
    ),
    "regime_map": (
        "Final metrics against ELR, shaded by regime; hatched bands are the estimated "
        "boundaries, crosses failed runs."
    ),
    "sharpness_vs_stability": "Effective sharpness against ELR with the stability limit 2/ELR.",
    "lyapunov": (
        "Lyapunov exponent per step (± 1 sigma, top) and mean step angle (bottom) against ELR, "
        "shaded by regime; blue: where λ turns reliably positive (1|2), purple: where steps "
        "exceed 45 degrees (2|3)."
    ),
}


def _figures(
    rows: list[dict[str, Any]], runs: list[RunData], boundaries: list[Boundary]
) -> list[tuple[str, str, Callable[[], Any]]]:
    """(file stem, caption, builder) of every figure one group's data allows."""
    builders: dict[str, Callable[[], Any]] = {}
    if runs:
        builders["figure1"] = lambda: plots.figure1(runs)
        builders["grad_vs_loss"] = lambda: plots.grad_vs_loss(runs)
    if rows:
        builders["regime_map"] = lambda: plots.regime_map(rows, boundaries)
    if any(run.diagnostics for run in runs):
        builders["sharpness_vs_stability"] = lambda: plots.sharpness_vs_stability(runs)
    if per_elr(rows):
        builders["lyapunov"] = lambda: plots.lyapunov_vs_elr(rows, boundaries)
    return [(stem, CAPTIONS[stem], build) for stem, build in builders.items()]


def _add_figures(
    page: Page, sweep: Sweep, bounds: list[tuple[dict[str, str], list[Boundary]]]
) -> None:
    """Save every group's figures under figures/ (PNG + SVG) and embed the PNGs."""
    groups = sweep.groups()
    for index, ((axes, rows, runs), (_, boundaries)) in enumerate(zip(groups, bounds)):
        label = ", ".join(f"{k}={v}" for k, v in axes.items())
        if len(groups) > 1:
            page.heading(f"Figures for {label}")
        for stem, caption, build in _figures(rows, runs, boundaries):
            suffix = f"_{index}" if len(groups) > 1 else ""
            png, _svg = save_figure(build(), sweep.root / "figures" / (stem + suffix))
            page.figure(png, f"{label}: {caption}" if label else caption)


def _environment_rows(configs: list[dict[str, Any]]) -> list[list[str]]:
    """(item, this report's machine, what the runs' configs recorded) per row."""
    recorded: dict[str, set[str]] = {}
    for config in configs:
        env = config.get("environment")
        for key, value in env.items() if isinstance(env, dict) else ():
            recorded.setdefault(str(key), set()).add(str(value))
    here = {"python": platform.python_version(), "platform": platform.platform()}
    for package in PACKAGES:
        try:
            here[package] = metadata.version(package)
        except metadata.PackageNotFoundError:  # e.g. spherelab run from a source tree
            module = sys.modules.get(package)
            here[package] = str(getattr(module, "__version__", "not installed"))
    keys = list(here) + sorted(k for k in recorded if k not in here)
    return [
        [key, here.get(key, ""), ", ".join(sorted(recorded.get(key, ()))) or "-"] for key in keys
    ]


def _default_title(sweep: Sweep) -> str:
    spec = (sweep.spec or {}).get("spec", sweep.spec or {})  # sweep.py nests it under "spec"
    spec = spec if isinstance(spec, dict) else {}
    parts = [str(spec[k]) for k in ("model", "dataset") if isinstance(spec.get(k), str)]
    return f"ELR sweep: {' on '.join(parts) if parts else sweep.root.resolve().name}"


def _overview(sweep: Sweep) -> str:
    elrs = sorted({r["elr"] for r in sweep.rows if not math.isnan(r["elr"])})
    status = Counter(r.get("status") or "?" for r in sweep.rows)
    regimes = Counter(r["regime"] for r in sweep.rows if r.get("regime"))
    span = f" from {elrs[0]:.3g} to {elrs[-1]:.3g}" if elrs else ""
    return (
        f"{len(sweep.rows)} runs over {len(elrs)} ELRs{span}. Status: "
        + ", ".join(f"{k} {v}" for k, v in sorted(status.items()))
        + ". Regimes: "
        + (", ".join(f"{k} {v}" for k, v in sorted(regimes.items())) or "none")
        + "."
    )


def _add_tables(
    page: Page, sweep: Sweep, bounds: list[tuple[dict[str, str], list[Boundary]]]
) -> None:
    page.heading("Regime boundaries")
    rows = [[*axes.values(), b.below, b.above, b.lo, b.hi] for axes, bs in bounds for b in bs]
    if rows:
        page.table(
            [*sweep.axes, "below", "above", "lo (last ELR below)", "hi (first ELR above)"], rows
        )
    else:
        page.paragraph("No boundary: the classified runs lie in a single regime (or none).")
    silent = Counter(r["regime"] for r in sweep.rows if r.get("regime") in NO_REGIME)
    if silent:
        page.paragraph(
            "Runs labelled "
            + ", ".join(f"{k} ({v})" for k, v in sorted(silent.items()))
            + " name no regime: they are grey in the figures and do not vote on the regime "
            "of their ELR or on the boundaries."
        )
    page.heading("Runs")
    columns = [*TABLE_COLUMNS[:2], *sweep.axes, *TABLE_COLUMNS[2:]]
    page.table(
        columns,
        [[_cell(r, c) for c in columns] for r in sweep.rows],
        row_class=[r.get("regime") or r.get("status") or "" for r in sweep.rows],
    )
    failed = [r for r in sweep.rows if r.get("status") == "failed"]
    if failed:
        page.heading("Failed runs")
        page.preformatted(
            "\n\n".join(
                f"elr={r['elr']:.4g} seed={r['seed']} "
                f"({r.get('run_dir') or 'no run dir'}):\n{r.get('error')}"
                for r in failed
            )
        )


def _cell(row: dict[str, Any], column: str) -> Any:
    value = row.get(column, "")
    if row.get("status") == "failed" and isinstance(value, float) and math.isnan(value):
        return ""  # a failed run has no metrics; "nan" would suggest a non-finite one
    if column == "error" and isinstance(value, str) and len(value) > 120:
        return value.splitlines()[-1][:120] if value.strip() else value[:120]
    return "" if value is None else value


def write_report(sweep_dir: str | Path, title: str | None = None) -> Path:
    """Write figures (PNG+SVG in figures/), boundaries.json and report.html; returns the page."""
    sweep = load_sweep(sweep_dir)
    bounds = [(axes, sweep_boundaries(rows)) for axes, rows, _ in sweep.groups()]
    atomic_write_text(
        sweep.root / "boundaries.json",
        dumps([{**b.to_dict(), "axes": axes} for axes, bs in bounds for b in bs], indent=2) + "\n",
    )
    page = Page(title or _default_title(sweep))
    page.paragraph(_overview(sweep))
    page.heading("Figures")
    _add_figures(page, sweep, bounds)
    _add_tables(page, sweep, bounds)
    page.heading("Sweep specification")
    page.preformatted(
        json.dumps(sweep.spec, indent=2, sort_keys=True)
        if sweep.spec
        else "no sweep.json in the sweep directory"
    )
    if sweep.configs:
        page.heading("Run configuration (first run; environment listed below)")
        config = {k: v for k, v in sweep.configs[0].items() if k != "environment"}
        page.preformatted(json.dumps(config, indent=2, sort_keys=True, default=str))
    page.heading("Environment")
    page.table(["item", "this report", "recorded by the runs"], _environment_rows(sweep.configs))
    out = page.write(sweep.root / "report.html")
    log.info("wrote %s", out)
    return out
