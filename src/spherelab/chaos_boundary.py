"""Regime boundaries from the Lyapunov exponent (docs/chaos.md), torch-free: per-ELR λ and step
angle over seeds from summary rows, the 1|2 bracket where λ becomes reliably positive, and the
2|3 bracket where the mean step angle says each step jumps to an unrelated direction.

Rows are summary.csv rows (text cells or numbers); a row without a finite ``lyapunov`` is
skipped. The measurement itself is spherelab.chaos.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from spherelab.regimes import Boundary

# λ counts as reliably positive when it exceeds this many of its standard errors.
RELIABLE_SIGMAS = 2.0
# A mean step angle above this (radians, 45 degrees) marks a step that has left its neighbourhood
# on the sphere: regime 3's steps land near 90 degrees, regime 2's stay well below 45 degrees.
JUMP_ANGLE = math.pi / 4
LYAPUNOV_LABELS = ("lambda<=0", "lambda>0")
ANGLE_LABELS = ("local steps", "jumps")


@dataclass(frozen=True)
class ElrLyapunov:
    """λ at one ELR over its seeds: mean, standard error, mean step angle, number of runs."""

    elr: float
    lyapunov: float
    err: float
    step_angle: float
    runs: int

    @property
    def reliably_positive(self) -> bool:
        return self.lyapunov > RELIABLE_SIGMAS * self.err


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def per_elr(rows: Sequence[Mapping[str, Any]]) -> list[ElrLyapunov]:
    """One ElrLyapunov per ELR with measured runs, sorted by ELR. The error combines each run's
    own error with the scatter over seeds: sqrt(mean(err_i^2) + var_i) / sqrt(n)."""
    groups: dict[float, list[tuple[float, float, float]]] = {}
    for row in rows:
        lam = _num(row.get("lyapunov"))
        if math.isfinite(lam):
            err, angle = _num(row.get("lyapunov_err")), _num(row.get("step_angle_mean"))
            groups.setdefault(_num(row.get("elr")), []).append((lam, err, angle))
    out = []
    for elr in sorted(groups):
        vals = groups[elr]
        n = len(vals)
        mean = sum(v[0] for v in vals) / n
        var = sum((v[0] - mean) ** 2 for v in vals) / (n - 1) if n > 1 else 0.0
        own = sum((v[1] if math.isfinite(v[1]) else 0.0) ** 2 for v in vals) / n
        angle = sum(v[2] for v in vals) / n
        out.append(ElrLyapunov(elr, mean, math.sqrt((own + var) / n), angle, n))
    return out


def _first_of_the_top_run(flags: Sequence[bool]) -> int | None:
    """Index where the final run of True values starts (None if the last is False or it starts
    at 0, where there is nothing below to bracket with)."""
    if not flags or not flags[-1]:
        return None
    k = len(flags) - 1
    while k > 0 and flags[k - 1]:
        k -= 1
    return k or None


def lyapunov_boundary(rows: Sequence[Mapping[str, Any]]) -> Boundary | None:
    """The 1|2 bracket from λ: the smallest ELR from which every larger ELR has a reliably
    positive λ, and the ELR just below it; None without such a pair."""
    points = per_elr(rows)
    k = _first_of_the_top_run([p.reliably_positive for p in points])
    if k is None:
        return None
    return Boundary(points[k - 1].elr, points[k].elr, *LYAPUNOV_LABELS)


def step_angle_boundary(rows: Sequence[Mapping[str, Any]]) -> Boundary | None:
    """The 2|3 bracket from the mean step angle: the smallest ELR from which every larger ELR
    steps more than JUMP_ANGLE, and the ELR just below it; None without such a pair."""
    points = per_elr(rows)
    k = _first_of_the_top_run([p.step_angle > JUMP_ANGLE for p in points])
    if k is None:
        return None
    return Boundary(points[k - 1].elr, points[k].elr, *ANGLE_LABELS)
