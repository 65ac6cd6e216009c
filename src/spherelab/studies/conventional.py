"""Conventional training (SGD + weight decay, no sphere) read on the sphere: angles and spikes.

Two diagnostics of a conventional run's records (rows of metrics.jsonl):

* ``angle_table``: per record, the effective ELR, the equilibrium prediction of the per-step
  angle sqrt(2 lr wd / (1 + mu)) (docs/science.md#conventional-training-with-weight-decay) and
  two measurements of it:
  ``angle_step_grad`` = ELR * ||g_eff|| / sqrt(1 - mu^2), the angle of one step whose gradient
  has the recorded effective norm (momentum over noise-dominated gradients multiplies the step
  by 1/sqrt(1 - mu^2); with this factor the norm balance gives exactly the prediction), and
  ``angle_step_chord`` = the recorded angle since the previous record / steps in between (a
  lower bound: steps in different directions partly cancel). ``eff_grad_norm`` is measured on
  batches of ``train.eval_batch_size``; set it to the training batch size for this comparison.
* ``detect_spikes``: periodic destabilizations (loss spikes while the SI norm shrinks); defined
  in ``spherelab.studies.spikes`` with ``SpikeReport`` and ``spike_figure``.

``summarize_grid`` applies both to every run of an lr x weight-decay sweep.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spherelab.io import read_json, read_jsonl, write_csv, write_json
from spherelab.metrics.geometry import equilibrium_angle
from spherelab.report.data import load_sweep
from spherelab.report.html import Page
from spherelab.report.style import new_figure, regime_color, save_figure
from spherelab.studies.lens import write_lens
from spherelab.studies.spikes import SpikeReport, detect_spikes, spike_figure


def angle_table(
    records: Sequence[Mapping[str, Any]], weight_decay: float, momentum: float = 0.0
) -> list[dict[str, float]]:
    """Per record: ELR, effective ELR (ELR / (1 - mu)), predicted and measured per-step angles.

    The record's ``lr`` (the applied rate, schedule included) feeds the prediction.
    """
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum={momentum!r} must be in [0, 1)")
    rows = sorted(records, key=lambda r: r["step"])
    out = []
    for prev, row in zip([None, *rows[:-1]], rows):
        elr, grad = float(row["elr"]), float(row["eff_grad_norm"])
        steps = row["step"] - prev["step"] if prev is not None else 0
        out.append(
            {
                "epoch": float(row["epoch"]),
                "step": int(row["step"]),
                "elr": elr,
                "elr_effective": elr / (1.0 - momentum),
                "angle_predicted": equilibrium_angle(float(row["lr"]), weight_decay, momentum),
                "angle_step_grad": math.atan(elr * grad / math.sqrt(1.0 - momentum**2)),
                "angle_step_chord": float(row["angle"]) / steps if steps > 0 else math.nan,
            }
        )
    return out


def equilibrium_summary(
    table: Sequence[Mapping[str, float]], tail: float = 0.5
) -> dict[str, float]:
    """Medians over the last ``tail`` fraction of the records: predicted vs measured angle."""
    if not table or not 0 < tail <= 1:
        raise ValueError(f"need a non-empty angle table and 0 < tail <= 1 (got tail={tail})")
    part = table[-max(round(len(table) * tail), 1) :]

    def med(key: str) -> float:
        values = [r[key] for r in part if math.isfinite(r[key])]
        return float(np.median(values)) if values else math.nan

    predicted, measured = med("angle_predicted"), med("angle_step_grad")
    return {
        "angle_predicted": predicted,
        "angle_step_grad": measured,
        "angle_step_chord": med("angle_step_chord"),
        "measured_over_predicted": measured / predicted if predicted > 0 else math.nan,
        "elr_effective": med("elr_effective"),
    }


def relaxation_steps(lr: float, weight_decay: float, momentum: float = 0.0) -> float:
    """Steps for the squared norm to relax by e towards its equilibrium: (1 - mu) / (2 lr wd).

    Only runs much longer than this can be compared with the equilibrium prediction.
    """
    rate = 2 * lr * weight_decay / (1 - momentum)
    return 1 / rate if rate > 0 else math.inf


def run_diagnostics(
    records: Sequence[Mapping[str, Any]], optim: Mapping[str, Any]
) -> dict[str, Any]:
    """Angles and spikes of one conventional run from its records and config["optim"]."""
    lr, wd = float(optim["lr"]), float(optim.get("weight_decay", 0.0))
    momentum = float(optim.get("momentum", 0.0))
    table = angle_table(records, wd, momentum)
    return {
        "lr": lr,
        "weight_decay": wd,
        "momentum": momentum,
        "equilibration_steps": relaxation_steps(lr, wd, momentum),
        "equilibrium": equilibrium_summary(table),
        "spikes": detect_spikes(records).to_dict(),
        "angles": table,
    }


ANGLE_KEYS = ("angle_predicted", "angle_step_grad", "measured_over_predicted")
GRID_COLUMNS = (
    "lr",
    "weight_decay",
    "momentum",
    "regime",
    "train_loss",
    "test_acc",
    "elr_effective_final",
    "steps",
    "equilibration_steps",
    "angle_predicted",
    "angle_step_grad",
    "measured_over_predicted",
    "spike_count",
    "spike_period_epochs",
    "lens_agreement",
    "run_dir",
)


def summarize_grid(grid_dir: str | Path, map_dir: str | Path | None, out: str | Path) -> Path:
    """One row per conventional run of a sweep (angles, spikes, lens agreement) + figures.

    Writes out/summary.csv, out/conventional.json, out/lens/<run>/ (lens pages; only with a
    map_dir), out/figures/spikes_<run>.{png,svg} (runs with spikes), out/report.html; returns
    the summary.csv path.
    """
    grid, out = load_sweep(grid_dir), Path(out)
    rows, lenses = [], []
    for row in grid.rows:
        run_dir, name = Path(grid_dir) / row["run_dir"], Path(row["run_dir"]).name
        records = read_jsonl(run_dir / "metrics.jsonl")
        diag = run_diagnostics(records, read_json(run_dir / "config.json")["optim"])
        agreement = math.nan
        if map_dir is not None:
            write_lens(run_dir, map_dir, out / "lens" / name)
            lenses.append(read_json(out / "lens" / name / "lens.json"))
            agreement = lenses[-1]["agreement"]
        spikes = SpikeReport(**diag["spikes"])
        if spikes.count:
            save_figure(
                spike_figure(records, spikes, diag["momentum"]), out / "figures" / f"spikes_{name}"
            )
        rows.append(
            {
                **{k: diag[k] for k in ("lr", "weight_decay", "momentum")},
                **{k: row.get(k) for k in ("regime", "train_loss", "test_acc")},
                "elr_effective_final": diag["angles"][-1]["elr_effective"],
                "steps": diag["angles"][-1]["step"],
                "equilibration_steps": diag["equilibration_steps"],
                **{k: diag["equilibrium"][k] for k in ANGLE_KEYS},
                "spike_count": spikes.count,
                "spike_period_epochs": spikes.period_epochs,
                "lens_agreement": agreement,
                "run_dir": row["run_dir"],
            }
        )
    write_csv(out / "summary.csv", rows, GRID_COLUMNS)
    _grid_page(out, rows, lenses)
    return out / "summary.csv"


def _grid_page(
    out: Path, rows: Sequence[Mapping[str, Any]], lenses: Sequence[Mapping[str, Any]]
) -> None:
    judged = [r["lens_agreement"] for r in rows if math.isfinite(r["lens_agreement"])]
    write_json(
        out / "conventional.json",
        {"runs": list(rows), "mean_lens_agreement": float(np.mean(judged)) if judged else math.nan},
    )
    page = Page("Conventional training (lr x weight decay) on the sphere's terms")
    if lenses:
        png = _trajectories(out, rows, lenses)
        page.figure(png, "effective-ELR trajectories over the fixed-ELR sweep's regime bands")
    for name in sorted((out / "figures").glob("spikes_*.png")):
        page.figure(name, f"loss spikes while the norm shrinks: {name.stem}")
    page.table(GRID_COLUMNS[:-1], [[r[k] for k in GRID_COLUMNS[:-1]] for r in rows])
    page.write(out / "report.html")


def _trajectories(
    out: Path, rows: Sequence[Mapping[str, Any]], lenses: Sequence[Mapping[str, Any]]
) -> Path:
    fig = new_figure(7.5, 4.5)
    ax = fig.subplots()
    lo = min(min(x["elr_effective"]) for x in lenses) / 3
    hi = max(max(x["elr_effective"]) for x in lenses) * 3
    for b_lo, b_hi, regime in lenses[0]["bands"]:
        ax.axhspan(max(b_lo, lo), min(b_hi, hi), color=regime_color(regime), alpha=0.2, lw=0)
    for row, x in zip(rows, lenses):
        ax.plot(
            x["epochs"],
            x["elr_effective"],
            ".-",
            label=f"lr {row['lr']:g}, wd {row['weight_decay']:g}",
        )
    ax.set(
        yscale="log",
        ylim=(lo, hi),
        xlabel="epoch",
        ylabel="effective ELR = lr / ((1 - mu) ||w||^2)",
    )
    ax.legend(fontsize=7)
    return save_figure(fig, out / "figures" / "trajectories")[0]
