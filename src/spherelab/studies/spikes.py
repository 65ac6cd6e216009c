"""Loss spikes of conventional training: periodic destabilizations as the SI norm shrinks.

``detect_spikes`` reads a conventional run's records (rows of metrics.jsonl). A spike starts at a
record whose train loss has risen ``ratio`` times (and by at least ``min_rise`` nats) above the
lowest loss since the last spike, while the SI norm was shrinking into it (the weight-decay phase
that grows the ELR). It ends when the loss is back below the rise threshold or below peak /
ratio. ``spike_figure`` draws a run's loss, norm and ELR with the onsets marked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from spherelab.report.style import new_figure

SPIKE_RATIO = 3.0  # loss must rise to >= 3x the trough since the last spike...
SPIKE_MIN_RISE = 0.1  # ...and by >= 0.1 nats (tiny converged losses jitter by large ratios)
NORM_LOOKBACK = 2  # the SI norm must have fallen over the 2 records before the onset
PERIODIC_CV = 0.5  # intervals with a coefficient of variation below this count as periodic


@dataclass(frozen=True)
class SpikeReport:
    """Spike onsets of one trajectory; period = median interval between onsets (NaN if < 2)."""

    count: int
    period_epochs: float
    period_steps: float
    onset_epochs: list[float] = field(default_factory=list)
    onset_steps: list[int] = field(default_factory=list)
    peak_losses: list[float] = field(default_factory=list)
    periodic: bool = False  # >= 3 spikes with regular intervals (CV < PERIODIC_CV)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _column(records: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    try:
        return np.array([float(r[key]) for r in records], dtype=np.float64)
    except KeyError:
        raise ValueError(
            f"every record needs the key {key!r}; pass the rows of a run's metrics.jsonl"
        ) from None


def _norm_shrinking(norm: np.ndarray, i: int, lookback: int) -> bool:
    start = max(i - 1 - lookback, 0)
    return i >= 2 and norm[i - 1] < norm[start]


def detect_spikes(
    records: Sequence[Mapping[str, Any]],
    *,
    ratio: float = SPIKE_RATIO,
    min_rise: float = SPIKE_MIN_RISE,
    lookback: int = NORM_LOOKBACK,
) -> SpikeReport:
    """Find loss spikes that follow a shrinking SI norm in records sorted by step."""
    if ratio <= 1:
        raise ValueError(f"ratio={ratio} must be > 1 (a spike is a rise by that factor)")
    rows = sorted(records, key=lambda r: r["step"])
    loss, norm = _column(rows, "train_loss"), _column(rows, "si_norm")
    onsets: list[int] = []
    peaks: list[float] = []
    trough, peak, in_spike = loss[0], -math.inf, False
    for i in range(1, len(rows)):
        if in_spike:
            peak = max(peak, loss[i])
            peaks[-1] = peak
            if loss[i] < ratio * trough or loss[i] < peak / ratio:
                in_spike, trough = False, loss[i]
            continue
        risen = loss[i] >= ratio * trough and loss[i] - trough >= min_rise
        if risen and math.isfinite(loss[i]) and _norm_shrinking(norm, i, lookback):
            in_spike, peak = True, loss[i]
            onsets.append(i)
            peaks.append(peak)
        else:
            trough = min(trough, loss[i])
    return _report(rows, onsets, peaks)


def _report(
    rows: Sequence[Mapping[str, Any]], onsets: list[int], peaks: list[float]
) -> SpikeReport:
    epochs = [float(rows[i]["epoch"]) for i in onsets]
    steps = [int(rows[i]["step"]) for i in onsets]
    period_e = float(np.median(np.diff(epochs))) if len(onsets) >= 2 else math.nan
    period_s = float(np.median(np.diff(steps))) if len(onsets) >= 2 else math.nan
    periodic = False
    if len(onsets) >= 3:
        gaps = np.diff(steps).astype(float)
        periodic = bool(gaps.std() / gaps.mean() < PERIODIC_CV)
    return SpikeReport(
        len(onsets), period_e, period_s, epochs, steps, [float(p) for p in peaks], periodic
    )


def spike_figure(
    records: Sequence[Mapping[str, Any]], report: SpikeReport, momentum: float = 0.0
) -> Figure:
    """Train loss, SI norm and effective ELR against epoch; spike onsets as vertical lines."""
    rows = sorted(records, key=lambda r: r["step"])
    epochs = [float(r["epoch"]) for r in rows]
    fig = new_figure(7, 6.5)
    axes = fig.subplots(3, 1, sharex=True)
    series = (
        ("train loss", [r["train_loss"] for r in rows]),
        ("SI norm ||w||", [r["si_norm"] for r in rows]),
        ("ELR / (1 - momentum)", [r["elr"] / (1 - momentum) for r in rows]),
    )
    for ax, (label, values) in zip(axes, series):
        ax.plot(epochs, values, "k.-", ms=3)
        ax.set(yscale="log", ylabel=label)
        for onset in report.onset_epochs:
            ax.axvline(onset, color="tab:red", ls="--", lw=1)
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel("epoch")
    axes[0].set_title(
        f"{report.count} spikes (red), period {report.period_epochs:.3g} epochs", fontsize=10
    )
    return fig
