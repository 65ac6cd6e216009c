"""Figure (PNG + SVG) and HTML page for ``spherelab.toy.run_toy``; matplotlib, no torch.

Like ``spherelab.report.figures``: a ``Figure`` on an explicit Agg canvas, no pyplot global state.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from mpl_toolkits.mplot3d import Axes3D

from spherelab.report.html import Page
from spherelab.report.style import REGIME_COLORS as COLORS

# Converged runs reach the float64 floor (~1e-32); draw anything below this at this value.
LOSS_DISPLAY_FLOOR = 1e-8


def write_outputs(
    summary: Mapping[str, Any], paths: Mapping[str, Any], out: Path
) -> dict[str, str]:
    """Write toy.png, toy.svg and toy.html under ``out``; returns their paths by kind."""
    fig = Figure(figsize=(16, 4.8))
    FigureCanvasAgg(fig)
    _loss_panel(fig.add_subplot(1, 3, 1), summary)
    _lyapunov_panel(fig.add_subplot(1, 3, 2), summary)
    _sphere_panel(cast(Axes3D, fig.add_subplot(1, 3, 3, projection="3d")), paths)
    fig.tight_layout()
    files = {"png": out / "toy.png", "svg": out / "toy.svg", "html": out / "toy.html"}
    fig.savefig(files["png"], dpi=110)
    fig.savefig(files["svg"])
    _page(summary, files["png"]).write(files["html"])
    return {k: str(v) for k, v in files.items()}


def _theory_lines(ax: Axes, summary: Mapping[str, Any]) -> None:
    eta1, err = summary["lyapunov_threshold"], summary["lyapunov_threshold_err"]
    ax.axvspan(eta1 - err, eta1 + err, color="k", alpha=0.15)
    ax.axvline(eta1, color="k", lw=1, label=f"Lyapunov eta_1 = {eta1:.4g}")
    ax.axvline(
        summary["gd_threshold"],
        color="grey",
        ls=":",
        label=f"GD 2/lambda_max = {summary['gd_threshold']:.3g}",
    )
    if summary.get("convergence_boundary"):
        ax.axvline(
            summary["convergence_boundary"],
            color="tab:green",
            ls="-.",
            label=f"measured 1|2 = {summary['convergence_boundary']:.4g}",
        )


def _loss_panel(ax: Axes, summary: Mapping[str, Any]) -> None:
    for regime, color in COLORS.items():
        rows = [r for r in summary["results"] if r["regime"] == regime]
        if rows:
            ax.scatter(
                [r["elr"] for r in rows],
                [max(r["mean_loss"], LOSS_DISPLAY_FLOOR) for r in rows],
                color=color,
                label=regime,
                zorder=3,
            )
    ax.axhline(
        summary["uniform_loss"],
        color="tab:blue",
        ls="--",
        label=f"uniform direction {summary['uniform_loss']:.3g}",
    )
    ax.axhline(
        summary["large_elr_loss"],
        color="tab:red",
        ls=":",
        label=f"eta -> inf limit {summary['large_elr_loss']:.3g}",
    )
    _theory_lines(ax, summary)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="ELR eta",
        ylabel="stationary loss (last decade)",
        title=f"loss vs ELR (floor drawn at {LOSS_DISPLAY_FLOOR:g})",
    )
    ax.legend(fontsize=7)


def _lyapunov_panel(ax: Axes, summary: Mapping[str, Any]) -> None:
    curve = summary["lyapunov_curve"]
    ax.plot(curve["eta"], curve["exponent"], "o-", ms=3, color="tab:purple")
    ax.axhline(0.0, color="k", lw=0.8)
    _theory_lines(ax, summary)
    ax.set(
        xlabel="ELR eta",
        ylabel="top Lyapunov exponent per step",
        title="linearised SGD near the zero-loss set",
    )
    ax.legend(fontsize=7)


def _sphere_panel(ax: Axes3D, paths: Mapping[str, Any]) -> None:
    phi, theta = np.meshgrid(np.linspace(0, 2 * np.pi, 25), np.linspace(0, np.pi, 13))
    ax.plot_wireframe(
        np.cos(phi) * np.sin(theta),
        np.sin(phi) * np.sin(theta),
        np.cos(theta),
        color="0.85",
        lw=0.5,
    )
    pole = np.asarray(paths["pole"])
    ax.scatter(*np.stack([pole, -pole]).T, color="k", s=40, label="zero-loss set")
    # Drawn in reverse so the (short, converging) regime-1 path ends up on top.
    items = list(zip(paths["elrs"], paths["regimes"], paths["positions"]))[::-1]
    for elr, regime, pos in items:
        ax.plot(
            *np.asarray(pos).T,
            ".-",
            ms=2,
            lw=0.6,
            alpha=0.8,
            color=COLORS[regime],
            label=f"eta = {elr:.3g}: {regime}",
        )
    ax.scatter(*np.asarray(items[0][2])[0], color="tab:blue", s=30, marker="*", label="start")
    steps = len(items[0][2])
    ax.set_title(f"d = 3, n = 2: first {steps} steps, one trajectory per regime")
    ax.set_box_aspect((1, 1, 1))
    ax.set(xticklabels=[], yticklabels=[], zticklabels=[])
    ax.legend(fontsize=7, loc="upper left")


def _page(summary: Mapping[str, Any], png: Path) -> Page:
    page = Page(
        f"Quadratic SI toy: d = {summary['d']}, n = {summary['n']}, seed = {summary['seed']}"
    )
    page.paragraph(
        "f_i(u) = 1/2 (a_i . u)^2 on the unit sphere, SGD with batch size "
        f"{summary['batch_size']}, {summary['steps']} steps, {summary['n_inits']} "
        "initial points per ELR. Regimes are labelled from the loss trajectories by "
        "spherelab.regimes.classify (init loss = uniform-direction loss)."
    )
    page.heading("Theory vs measurement")
    keys = [
        "lyapunov_threshold",
        "lyapunov_threshold_err",
        "convergence_boundary",
        "gd_threshold",
        "uniform_loss",
        "large_elr_loss",
    ]
    page.table(["quantity", "value"], [[k, summary[k]] for k in keys])
    page.figure(png, "stationary loss, Lyapunov exponent and d = 3 trajectories")
    page.heading("Sweep")
    rows = summary["results"]
    page.table(
        ["ELR", "final loss", "mean loss (last decade)", "regime"],
        [[r["elr"], r["final_loss"], r["mean_loss"], r["regime"]] for r in rows],
        row_class=[r["regime"] for r in rows],
    )
    page.heading("Boundaries (brackets after bisection)")
    page.preformatted(json.dumps(summary["boundaries"], indent=2))
    return page
