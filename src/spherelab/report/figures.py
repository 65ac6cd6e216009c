"""Draw the figures of an ELR sweep (Figure 1 replica, regime map, ...) with matplotlib, no torch.

Figures are built on `matplotlib.figure.Figure` with an explicit Agg canvas, so nothing here
touches pyplot's global state or needs a display; inputs are plain data (`RunData`, dicts). The
regime colours, the figure factory and `save_figure` live in ``spherelab.report.style``; the
regime of each ELR (shading) is ``spherelab.regimes.sweep_labels``, as for boundaries.json.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps, colors
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from spherelab.chaos_boundary import lyapunov_boundary, per_elr, step_angle_boundary
from spherelab.regimes import FINAL_STATUSES, NO_REGIME, Boundary, sweep_labels
from spherelab.report.data import RunData
from spherelab.report.style import (
    NO_REGIME_COLOR,
    REGIME_COLORS,
    REGIME_NUMBERS,
    new_figure,
    regime_color,
)

ELR_CMAP = "viridis"


def _num(value: Any) -> float:
    """A float, with missing/garbled/non-finite values as NaN (matplotlib leaves a gap)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) else math.nan


def _series(records: Sequence[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    epochs = np.array([_num(r.get("epoch")) for r in records], dtype=float)
    values = np.array([_num(r.get(key)) for r in records], dtype=float)
    return epochs, values


def _elr_colours(elrs: Sequence[float]) -> ScalarMappable:
    """Log-normalized ELR -> colour mapping (also feeds the colour bar)."""
    positive = [e for e in elrs if math.isfinite(e) and e > 0]
    lo, hi = (min(positive), max(positive)) if positive else (1e-3, 1e-3)
    if lo == hi:  # a single ELR: widen so the norm is well defined
        lo, hi = lo / 2, hi * 2
    return ScalarMappable(norm=colors.LogNorm(vmin=lo, vmax=hi), cmap=colormaps[ELR_CMAP])


def _require_runs(runs: Sequence[RunData], what: str) -> None:
    if not any(run.records for run in runs):
        raise ValueError(
            f"{what} needs at least one run with metrics records, got {len(runs)} "
            "runs and none has any; check the runs' metrics.jsonl files"
        )


def figure1(runs: Sequence[RunData]) -> Figure:
    """Figure 1 of the paper: train loss, test error % and eff. grad norm against epoch."""
    _require_runs(runs, "figure1")
    fig = new_figure(12, 3.8)
    axes = fig.subplots(1, 3)
    mapper = _elr_colours([run.elr for run in runs])
    for run in sorted(runs, key=lambda r: r.elr):
        colour = mapper.to_rgba(run.elr)  # type: ignore[arg-type]  # stub: arrays only
        epochs, loss = _series(run.records, "train_loss")
        _, acc = _series(run.records, "test_acc")
        _, grad = _series(run.records, "eff_grad_norm")
        for ax, values in zip(axes, (loss, 100.0 * (1.0 - acc), grad)):
            ax.plot(epochs, values, color=colour, lw=1.4, marker=".", ms=3)
    labels = ("train loss", "test error, %", "mean effective gradient norm")
    for ax, label in zip(axes, labels):
        ax.set_xscale("symlog", linthresh=1.0, linscale=0.4)  # shows epoch 0 (init)
        ax.set_xlim(left=0)
        ax.set_xlabel("epoch")
        ax.set_title(label)
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_yscale("log", nonpositive="mask")
    axes[2].set_yscale("log", nonpositive="mask")
    fig.colorbar(mapper, ax=list(axes), label="ELR", pad=0.01)
    return fig


def grad_vs_loss(runs: Sequence[RunData]) -> Figure:
    """Effective gradient norm against train loss (log-log), one trajectory per run."""
    _require_runs(runs, "grad_vs_loss")
    fig = new_figure(7, 5.2)
    ax = fig.subplots()
    mapper = _elr_colours([run.elr for run in runs])
    starts = []
    for run in sorted(runs, key=lambda r: r.elr):
        _, loss = _series(run.records, "train_loss")
        _, grad = _series(run.records, "eff_grad_norm")
        colour = mapper.to_rgba(run.elr)  # type: ignore[arg-type]  # stub: arrays only
        ax.plot(loss, grad, color=colour, lw=1, marker="o", ms=3, alpha=0.85)
        if run.records and _num(run.records[0].get("epoch")) == 0:
            starts.append((loss[0], grad[0]))
    starts = [s for s in starts if np.isfinite(s).all() and min(s) > 0]
    if starts:
        x0, y0 = np.asarray(starts).T
        ax.scatter(x0, y0, marker="*", s=220, c="black", zorder=5, label="init (epoch 0)")
        xs = np.geomspace(np.nanmin(_all(runs, "train_loss")), x0.max(), 2)
        ax.plot(xs, y0.mean() * xs / x0.mean(), "k:", lw=1, label="slope 1 (regime 1)")
        ax.legend(loc="lower right")
    ax.set_xscale("log", nonpositive="mask")
    ax.set_yscale("log", nonpositive="mask")
    ax.set_xlabel("train loss")
    ax.set_ylabel("mean effective gradient norm")
    ax.grid(True, which="major", alpha=0.3)
    fig.colorbar(mapper, ax=ax, label="ELR")
    return fig


def _all(runs: Sequence[RunData], key: str) -> np.ndarray:
    values = np.concatenate([_series(run.records, key)[1] for run in runs] or [np.ones(1)])
    return np.where(values > 0, values, np.nan)


def _shade_regimes(ax: Axes, regimes: list[tuple[float, str]]) -> None:
    """Shade each ELR's regime from the geometric midpoint with its left to its right neighbour."""
    if not regimes:
        return
    logs = np.log10([elr for elr, _ in regimes])
    half = np.diff(logs) / 2 if len(logs) > 1 else np.array([0.5])
    edges = np.concatenate([[logs[0] - half[0]], logs[:-1] + half, [logs[-1] + half[-1]]])
    for (_, regime), lo, hi in zip(regimes, edges[:-1], edges[1:]):
        ax.axvspan(10**lo, 10**hi, color=regime_color(regime), alpha=0.18, lw=0)


def _mark_boundaries(ax: Axes, boundaries: Sequence[Boundary], label: bool) -> None:
    for b in boundaries:
        ax.axvspan(b.lo, b.hi, facecolor="none", edgecolor="0.3", hatch="//", lw=0, alpha=0.5)
        ax.axvline(math.sqrt(b.lo * b.hi), color="0.2", ls="--", lw=1)
        if label:
            text = f"{REGIME_NUMBERS.get(b.below, b.below)}|{REGIME_NUMBERS.get(b.above, b.above)}"
            ax.text(
                math.sqrt(b.lo * b.hi),
                1.01,
                text,
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="bottom",
                fontsize=9,
            )


def _plot_final_metric(ax: Axes, rows: Sequence[Mapping[str, Any]], key: str) -> None:
    """Runs that ended as regime-coloured dots; non-finite values as triangles on top."""
    trans = ax.get_xaxis_transform()  # x in data, y in axes fraction
    for row in rows:
        elr, value = _num(row.get("elr")), _num(row.get(key))
        if row.get("status") not in FINAL_STATUSES or not elr > 0:
            continue
        colour = regime_color(str(row.get("regime")))
        if math.isnan(value):
            ax.plot(elr, 0.96, "^", color=colour, mec="k", ms=8, transform=trans, clip_on=False)
        else:
            ax.plot(elr, value, "o", color=colour, mec="k", ms=7, zorder=4)


def regime_map(rows: Sequence[Mapping[str, Any]], boundaries: Sequence[Boundary]) -> Figure:
    """Final train loss, test accuracy and eff. grad norm against ELR, shaded by regime."""
    if not rows:
        raise ValueError(
            "regime_map needs at least one summary row, got none; check the sweep's summary.csv"
        )
    fig = new_figure(7.5, 8)
    axes = fig.subplots(3, 1, sharex=True)
    regimes = list(sweep_labels(rows).items())
    failed = [_num(r.get("elr")) for r in rows if r.get("status") == "failed"]
    specs = (
        ("train_loss", "final train loss", "log"),
        ("test_acc", "final test accuracy", "linear"),
        ("eff_grad_norm", "final eff. gradient norm", "log"),
    )
    for i, (ax, (key, label, scale)) in enumerate(zip(axes, specs)):
        _shade_regimes(ax, regimes)
        _mark_boundaries(ax, boundaries, label=i == 0)
        _plot_final_metric(ax, rows, key)
        if failed:  # (an empty unclipped line breaks constrained layout)
            ax.plot(
                failed,
                [0.04] * len(failed),
                "kx",
                ms=9,
                mew=2,
                transform=ax.get_xaxis_transform(),
                clip_on=False,
            )
        ax.set_yscale(scale, **({"nonpositive": "mask"} if scale == "log" else {}))
        ax.set_ylabel(label)
        ax.grid(True, which="major", alpha=0.3)
    axes[1].set_ylim(-0.02, 1.02)
    axes[-1].set_xscale("log")
    axes[-1].set_xlabel("ELR")
    axes[0].legend(
        handles=_regime_legend(regimes, _no_regime_labels(rows), bool(failed), bool(boundaries)),
        loc="upper left",
        fontsize=8,
        framealpha=0.9,
    )
    return fig


def _no_regime_labels(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The labels in NO_REGIME (e.g. `unclassified`) that ended runs of `rows` carry."""
    return sorted(
        {str(r.get("regime")) for r in rows if r.get("status") in FINAL_STATUSES} & set(NO_REGIME)
    )


def _regime_legend(
    regimes: list[tuple[float, str]], no_regime: list[str], failed: bool, bounds: bool
) -> list[Any]:
    present = {regime for _, regime in regimes}
    handles: list[Any] = [
        Patch(color=c, alpha=0.5, label=f"{REGIME_NUMBERS[r]}: {r}")
        for r, c in REGIME_COLORS.items()
        if r in present
    ]
    handles += [
        Line2D([], [], ls="", marker="o", color=NO_REGIME_COLOR, mec="k", label=f"{r} (no vote)")
        for r in no_regime
    ]
    if bounds:
        handles.append(Patch(facecolor="none", edgecolor="0.3", hatch="//", label="boundary"))
    handles.append(Line2D([], [], ls="", marker="^", color="0.5", mec="k", label="non-finite"))
    if failed:
        handles.append(Line2D([], [], ls="", marker="x", color="k", mew=2, label="failed run"))
    return handles


def sharpness_vs_stability(runs: Sequence[RunData]) -> Figure:
    """Effective sharpness (top Hessian eigenvalue x rho^2) against ELR, with the line 2/ELR."""
    with_diag = [run for run in runs if run.diagnostics]
    if not with_diag:
        raise ValueError(
            f"sharpness_vs_stability needs runs with diagnostics (sharpness_eff); "
            f"none of the {len(runs)} runs has any: compute diagnostics first"
        )
    fig = new_figure(7, 5)
    ax = fig.subplots()
    for run in with_diag:
        elrs = np.array([_num(d.get("elr", run.elr)) for d in run.diagnostics])
        sharp = _series(run.diagnostics, "sharpness_eff")[1]
        colour = regime_color(run.regime)
        ax.scatter(elrs, sharp, s=14, color=colour, alpha=0.35, lw=0)
        ax.scatter(elrs[-1:], sharp[-1:], s=60, color=colour, edgecolor="k", zorder=4)
    grid = np.array([_num(d.get("elr", r.elr)) for r in with_diag for d in r.diagnostics])
    grid = grid[grid > 0]
    xs = np.geomspace(grid.min() / 2, grid.max() * 2, 50)
    ax.plot(xs, 2.0 / xs, "k--", lw=1.2, label="stability limit 2/ELR")
    ax.set_xscale("log")
    ax.set_yscale("log", nonpositive="mask")
    ax.set_xlabel("ELR")
    ax.set_ylabel("effective sharpness (top eigenvalue x rho^2)")
    present = {run.regime for run in with_diag}
    ax.legend(
        handles=[
            *ax.get_legend_handles_labels()[0],
            *(
                Line2D([], [], ls="", marker="o", color=c, mec="k", label=r)
                for r, c in REGIME_COLORS.items()
                if r in present
            ),
        ],
        fontsize=8,
    )
    ax.grid(True, which="major", alpha=0.3)
    return fig


def lyapunov_vs_elr(rows: Sequence[Mapping[str, Any]], boundaries: Sequence[Boundary]) -> Figure:
    """λ per step (± 1 sigma) and the mean step angle against ELR over the regime shading, with
    the brackets from λ (1|2) and from the step angle (2|3) (spherelab.chaos_boundary)."""
    points = per_elr(rows)
    if not points:
        raise ValueError(
            "lyapunov_vs_elr needs rows with a measured lyapunov; run `spherelab diagnose "
            "SWEEP --what lyapunov` first"
        )
    fig = new_figure(7.5, 6)
    top, bottom = fig.subplots(2, 1, sharex=True)
    regimes = list(sweep_labels(rows).items())
    elrs = [p.elr for p in points]
    for ax in (top, bottom):
        _shade_regimes(ax, regimes)
        _mark_boundaries(ax, boundaries, label=ax is top)
    for row in rows:
        lam = _num(row.get("lyapunov"))
        if math.isfinite(lam):
            colour = regime_color(str(row.get("regime")))
            top.errorbar(
                _num(row.get("elr")), lam, yerr=_num(row.get("lyapunov_err")), fmt="o",
                color=colour, mec="k", ms=6, zorder=4,
            )  # fmt: skip
            bottom.plot(
                _num(row.get("elr")), math.degrees(_num(row.get("step_angle_mean"))), "o",
                color=colour, mec="k", ms=6, zorder=4,
            )  # fmt: skip
    top.plot(elrs, [p.lyapunov for p in points], "k-", lw=0.8)
    top.axhline(0.0, color="0.2", lw=0.8)
    bracket = lyapunov_boundary(rows)
    if bracket is not None:
        top.axvspan(bracket.lo, bracket.hi, color="tab:blue", alpha=0.2, lw=0, label="λ turns > 0")
        top.legend(loc="upper left", fontsize=8)
    top.set_yscale("symlog", linthresh=1e-2)
    top.set_ylabel("Lyapunov exponent λ per step")
    jumps = step_angle_boundary(rows)
    bottom.plot(elrs, [math.degrees(p.step_angle) for p in points], "k-", lw=0.8)
    bottom.axhline(90.0, color="0.2", ls=":", lw=1, label="90° (unrelated direction)")
    if jumps is not None:
        bottom.axvspan(jumps.lo, jumps.hi, color="tab:purple", alpha=0.15, lw=0, label="steps jump")
    bottom.legend(loc="upper left", fontsize=8)
    bottom.set_yscale("log", nonpositive="mask")
    bottom.set_ylabel("mean step angle (degrees)")
    bottom.set_xscale("log")
    bottom.set_xlabel("ELR")
    for ax in (top, bottom):
        ax.grid(True, which="major", alpha=0.3)
    return fig
