"""Figures (PNG + SVG) and report.html of a pre-train / fine-tune directory (``run_finetune``).

Draws from the result of ``spherelab.studies.finetune.analyse``: the accuracy heatmap over (pre-train
ELR, fine-tune ELR) and the comparison with the scratch baseline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from spherelab.report.html import Page
from spherelab.report.style import new_figure, regime_color, regime_number, save_figure


def heatmap(result: Mapping[str, Any]) -> Figure:
    """Final test accuracy (seed mean) of every (pre-train ELR, fine-tune ELR) branch."""
    ps = sorted({g["pretrain_elr"] for g in result["grid"]})
    fs = sorted({g["finetune_elr"] for g in result["grid"]})
    acc = np.full((len(ps), len(fs)), np.nan)
    for g in result["grid"]:
        acc[ps.index(g["pretrain_elr"]), fs.index(g["finetune_elr"])] = g["test_acc"]
    fig = new_figure(1.6 + 1.3 * len(fs), 1.2 + 0.7 * len(ps))
    ax = fig.subplots()
    image = ax.imshow(acc, cmap="viridis", aspect="auto", origin="lower")
    for (i, j), value in np.ndenumerate(acc):
        ax.text(j, i, f"{value:.3f}", ha="center", va="center", color="w", fontsize=9)
    regimes = {row["elr"]: row["regime"] for row in result["pretrain"]}
    ax.set_yticks(range(len(ps)), [f"{p:.3g} (regime {regime_number(regimes[p])})" for p in ps])
    ax.set_xticks(range(len(fs)), [f"{f:.3g}" for f in fs])
    ax.set_ylabel("pre-train ELR (its regime)")
    ax.set_xlabel("fine-tune ELR")
    fig.colorbar(image, ax=ax, label="final test accuracy")
    return fig


def comparison(result: Mapping[str, Any]) -> Figure:
    """Pre-trained and best fine-tuned accuracy against the pre-train ELR, with the baseline."""
    fig = new_figure(6, 3.8)
    ax = fig.subplots()
    rows = result["pretrain"]
    elrs = [r["elr"] for r in rows]
    ax.plot(
        elrs, [r["pretrain_test_acc"] for r in rows], "o--", color="0.4", label="after pre-training"
    )
    ax.plot(
        elrs,
        [r["best_finetune_test_acc"] for r in rows],
        "-",
        color="k",
        lw=1,
        label="best fine-tune",
    )
    for r in rows:
        ax.plot(
            r["elr"],
            r["best_finetune_test_acc"],
            "s",
            mec="k",
            ms=8,
            color=regime_color(r["regime"]),
        )
    base = result.get("scratch_baseline")
    if base:
        ax.axhline(
            base["test_acc"],
            color="tab:blue",
            ls=":",
            label=f"scratch, ELR {base['elr']:.3g} ({base['regime']})",
        )
    ax.set_xscale("log")
    ax.set_xlabel("pre-train ELR (squares coloured by its regime)")
    ax.set_ylabel("final test accuracy")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    return fig


# the seeds' majority names no regime (all undetermined, unclassified or failed)
NO_LABEL = "no regime label"


def write_finetune_report(root: Path, result: Mapping[str, Any]) -> Path:
    """figures/ (PNG + SVG) and a self-contained report.html for a fine-tune directory."""
    page = Page("Pre-train at ELR p, fine-tune at ELR f")
    base = result.get("scratch_baseline") or {}
    page.paragraph(
        f"Best pre-train ELR {result['best_pretrain_elr']:.3g} "
        f"({result['best_pretrain_regime'] or NO_LABEL}), fine-tuned at {result['best_finetune_elr']:.3g}: "
        f"test accuracy {result['best_finetune_test_acc']:.4f}. From scratch with the same "
        f"budget: {base.get('test_acc', math.nan):.4f} at ELR {base.get('elr', math.nan):.3g} "
        f"({base.get('regime') or NO_LABEL}). Gain {result['gain_over_scratch']:+.4f}."
    )
    for name, build in (("heatmap", heatmap), ("comparison", comparison)):
        paths = save_figure(build(result), root / "figures" / name)
        page.figure(paths[0], name)
    page.heading("Pre-training runs")
    keys = ("elr", "regime", "pretrain_test_acc", "best_finetune_elr", "best_finetune_test_acc")
    page.table(
        ["pre-train ELR", "regime", "test acc", "best fine-tune ELR", "fine-tuned acc"],
        [[r[k] for k in keys] for r in result["pretrain"]],
        row_class=[r["regime"] for r in result["pretrain"]],
    )
    return page.write(root / "report.html")
