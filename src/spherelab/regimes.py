"""Label a run's regime from its trajectory (never from its ELR) and locate regime boundaries.

The three regimes (docs/science.md#the-three-regimes): ``convergence`` (the loss keeps falling,
in log space, with no floor), ``chaotic_equilibrium`` (after a transient the loss is stationary
well below the init level), ``divergence`` (the loss sits at the chance/init level, accuracy at
chance, the effective gradient norm jumped). ``classify`` reads losses at log-spaced epochs
(epoch 0 = init); ``classify_stretch`` applies the same rules to a stretch of records (the
regime lens).
``majority_regime`` is the one rule for several seeds' labels at one ELR; ``sweep_labels``,
``estimate_boundaries`` / ``sweep_boundaries`` and ``refine_points`` turn a labelled ELR sweep
into a label per ELR, brackets and the next ELRs to run (one bisection round in log-ELR).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any, TypeVar

import numpy as np

log = logging.getLogger("spherelab")
_Record = TypeVar("_Record", bound=Mapping[str, Any])

REGIMES = ("convergence", "chaotic_equilibrium", "divergence")
# Run statuses that end with a regime label (a `failed` run has none).
FINAL_STATUSES = ("finished", "nonfinite")
UNCLASSIFIED = "unclassified"  # the label of a run too short to have a trajectory
# Labels a run can get that name no regime: shown as such in reports, never a vote on a
# boundary or a majority. A new one (e.g. "undetermined") is one more entry here.
NO_REGIME = (UNCLASSIFIED,)
# Every label the classifier can give; anything else is a typo or a foreign file.
LABELS = (*REGIMES, *NO_REGIME)

# The final window is the last decade of epochs (epoch >= 10% of the last one): records are
# log-spaced, so this holds several points, and any transient (a few epochs in regime 2) is over.
FINAL_WINDOW_FRACTION = 0.1
# ...but never fewer points than this (short runs): a slope and two halves need four.
MIN_WINDOW_POINTS = 4
# Convergence: the loss falls by > 10^0.5 ~ 3x per decade of epochs (log-log slope <= -0.5).
# Paper regime-1 runs fall like a power law of order 1 or faster; a stationary regime-2 run with
# ~25% multiplicative noise gives slopes of about 0 +- 0.15 over a decade of ~5 records.
CONVERGENCE_SLOPE = -0.5
# ...and the (median) level of the second half of the window is at least 25% below the first
# half (a decade at slope -0.5 gives ~45%); guards against one noisy early point driving the
# slope. Slopes are Theil-Sen (median of pairwise slopes) and levels medians in log space, so
# the loss spikes of regime-1 runs near the boundary (catapults) do not hide their descent.
CONVERGENCE_LEVEL_DROP = 0.25
# ...or, when spikes hide the level drop, the lower envelope (running minimum) of the loss falls
# by >= 10x per decade: a stationary regime-2 run's running minimum creeps down far slower.
ENVELOPE_SLOPE = -1.0
# A slow but steady descent is convergence too (tiny ELRs, short runs): the halves' levels drop
# by >= 25% and >= 80% of all pairs of records fall. Stationary noise gives ~50% falling pairs.
STEADY_FALLING_PAIRS = 0.8
# A loss below 1e-6 of its init value has converged whatever its trend (it may sit at the
# floating-point floor). The lowest regime-2 level seen is ~5% of init (paper, ELR 1e-3).
TINY_LOSS_RATIO = 1e-6
# Divergence votes. Loss: at or above 90% of the reference (min of init and chance loss); the
# paper's diverged runs sit at or above init, regime-2 runs at <= 70% of chance.
DIVERGENCE_LOSS_RATIO = 0.9
# Accuracy: within 10% of the chance-to-perfect range above chance (diverged runs: 11% for 10
# classes; regime-2 runs are far above).
CHANCE_ACC_MARGIN = 0.1
# Effective gradient norm: final/init >= 10. Diverged runs jump 20-60x; regime 1 and 2 runs
# end 10-1000x *below* their init value.
GRAD_JUMP = 10.0
# Logs of losses that are exactly 0 use this floor.
LOSS_FLOOR = 1e-300


@dataclass(frozen=True)
class Classification:
    """A regime label and the statistics it was based on (all floats, JSON-ready)."""

    regime: str
    stats: dict[str, float]

    def to_dict(self) -> dict[str, object]:
        return {"regime": self.regime, "stats": dict(self.stats)}


@dataclass(frozen=True)
class Boundary:
    """Adjacent sweep ELRs ``lo`` < ``hi`` whose (majority) labels differ: below | above."""

    lo: float
    hi: float
    below: str
    above: str

    @property
    def mid(self) -> float:
        """Geometric midpoint: the next ELR of a bisection in log-ELR."""
        return math.sqrt(self.lo * self.hi)

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "mid": self.mid}


def classify(
    epochs: Sequence[float] | np.ndarray,
    train_loss: Sequence[float] | np.ndarray,
    eff_grad_norm: Sequence[float] | None = None,
    *,
    init_loss: float | None = None,
    chance_loss: float | None = None,
    train_acc: Sequence[float] | None = None,
    num_classes: int | None = None,
) -> Classification:
    """Label one trajectory (first point = epoch 0 = init) as one of REGIMES.

    ``init_loss`` defaults to the first loss, ``chance_loss`` to log(num_classes); accuracy
    (fractions; used only with ``num_classes``) and effective gradient norms are optional extra
    evidence for divergence. Every decision input is returned in ``stats``.
    """
    ep, loss = _validated(epochs, train_loss)
    grads = _optional_series("eff_grad_norm", eff_grad_norm, ep.size)
    acc = _optional_series("train_acc", train_acc, ep.size)
    if not np.all(np.isfinite(loss)) or (grads is not None and not np.all(np.isfinite(grads))):
        return Classification("divergence", {"nonfinite": 1.0})
    init = _init_loss(init_loss if init_loss is not None else loss[0])
    window = _final_window(ep)
    grad_jump = (
        float(np.median(grads[window]) / grads[0]) if grads is not None and grads[0] > 0 else None
    )
    return _judge_window(
        ep[window],
        loss[window],
        init,
        _chance_loss(chance_loss, num_classes),
        acc[window] if acc is not None and num_classes is not None else None,
        num_classes,
        grad_jump,
    )


def classify_stretch(
    epochs: Sequence[float],
    train_loss: Sequence[float],
    *,
    init_loss: float,
    chance_loss: float | None = None,
    train_acc: Sequence[float] | None = None,
    num_classes: int | None = None,
) -> Classification:
    """Label a stretch of a run (three or more records at epochs > 0, no init point) by the
    rules of `classify`, with the whole stretch as the final window.

    The regime lens labels each stretch of a conventional run's trajectory this way. There is
    no init point, so the effective gradient norm casts no divergence vote.
    """
    ep, loss = _validated(epochs, train_loss)
    if ep[0] <= 0:
        raise ValueError(
            f"a stretch starts at epoch {ep[0]}: its epochs must be > 0 (leave out the init "
            "point, or use classify for a whole trajectory)"
        )
    acc = _optional_series("train_acc", train_acc, ep.size)
    if not np.all(np.isfinite(loss)):
        return Classification("divergence", {"nonfinite": 1.0})
    return _judge_window(
        ep,
        loss,
        _init_loss(init_loss),
        _chance_loss(chance_loss, num_classes),
        acc if num_classes is not None else None,
        num_classes,
        None,
    )


def _init_loss(value: float) -> float:
    init = float(value)
    if not (math.isfinite(init) and init > 0):
        raise ValueError(
            f"init_loss={init}: the init loss must be positive and finite; pass "
            "init_loss explicitly (e.g. the loss of a random direction)"
        )
    return init


def _chance_loss(chance_loss: float | None, num_classes: int | None) -> float | None:
    if chance_loss is None and num_classes is not None:
        return math.log(num_classes)
    return chance_loss


def _judge_window(
    ep: np.ndarray,
    loss: np.ndarray,
    init: float,
    chance_loss: float | None,
    acc: np.ndarray | None,
    num_classes: int | None,
    grad_jump: float | None,
) -> Classification:
    """The labelling rule itself, on the records of a window (epochs > 0, finite losses)."""
    stats: dict[str, float] = {"init_loss": init, "nonfinite": 0.0}
    stats.update(_trend_stats(ep, loss))
    stats["final_to_init"] = stats["final_loss"] / stats["init_loss"]
    votes = [_loss_vote(stats, chance_loss)]
    if acc is not None and num_classes is not None:
        votes.append(_accuracy_vote(stats, acc, num_classes))
    if grad_jump is not None:
        stats["grad_jump"] = grad_jump
        votes.append(grad_jump >= GRAD_JUMP)
    stats["divergence_votes"] = float(sum(votes))
    stats["available_votes"] = float(len(votes))
    return Classification(_decide(stats, votes), stats)


def _decide(stats: Mapping[str, float], votes: Sequence[bool]) -> str:
    # A strict majority of the available divergence signals; with loss only, the loss decides.
    if 2 * sum(votes) > len(votes):
        return "divergence"
    if stats["final_to_init"] <= TINY_LOSS_RATIO:
        return "convergence"
    dropped = stats["level_change"] <= -CONVERGENCE_LEVEL_DROP
    if stats["slope"] <= CONVERGENCE_SLOPE and (
        dropped or stats["envelope_slope"] <= ENVELOPE_SLOPE
    ):
        return "convergence"
    if dropped and stats["falling_pairs"] >= STEADY_FALLING_PAIRS:
        return "convergence"
    return "chaotic_equilibrium"


def _validated(
    epochs: Sequence[float] | np.ndarray, losses: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    ep = np.asarray(epochs, dtype=np.float64)
    loss = np.asarray(losses, dtype=np.float64)
    if ep.ndim != 1 or ep.shape != loss.shape or ep.size < 3:
        raise ValueError(
            f"got {ep.size} epochs and {loss.size} losses: pass two equally long "
            "1-d sequences with the init point and at least two more records"
        )
    if np.any(np.diff(ep) <= 0) or ep[0] < 0:
        raise ValueError(
            f"epochs {ep.tolist()[:6]}...: they must be >= 0 and strictly "
            "increasing (sort the records by epoch)"
        )
    return ep, loss


def _optional_series(name: str, values: Sequence[float] | None, size: int) -> np.ndarray | None:
    if values is None:
        return None
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (size,):
        raise ValueError(
            f"{name} has shape {array.shape} but there are {size} epochs: pass one "
            "value per record (or None)"
        )
    return array


def _final_window(ep: np.ndarray) -> np.ndarray:
    """Indices of the last decade of epochs (> 0), at least MIN_WINDOW_POINTS of them."""
    positive = np.flatnonzero(ep > 0)
    window = positive[ep[positive] >= FINAL_WINDOW_FRACTION * ep[-1]]
    if window.size < MIN_WINDOW_POINTS:
        window = positive[-MIN_WINDOW_POINTS:]
    return window


def _pair_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    i, j = np.triu_indices(x.size, k=1)
    return (y[j] - y[i]) / (x[j] - x[i])


def _theil_sen(x: np.ndarray, y: np.ndarray) -> float:
    """Median of the pairwise slopes: a line fit that ignores a minority of outliers."""
    slopes = _pair_slopes(x, y)
    return float(np.median(slopes)) if slopes.size else 0.0


def _trend_stats(ep: np.ndarray, loss: np.ndarray) -> dict[str, float]:
    """Robust log-log slopes (loss and its running minimum), level change between the halves'
    medians, CV and the final level (median of the second half) over the window."""
    log_ep, log_loss = np.log(ep), np.log(np.maximum(loss, LOSS_FLOOR))
    half = loss.size // 2
    first, second = np.median(log_loss[:half]), np.median(log_loss[half:])
    mean = loss.mean()
    return {
        "slope": _theil_sen(log_ep, log_loss),
        "envelope_slope": _theil_sen(log_ep, np.minimum.accumulate(log_loss)),
        "falling_pairs": float(np.mean(_pair_slopes(log_ep, log_loss) < 0))
        if loss.size > 1
        else 0.0,
        "level_change": float(np.expm1(second - first)),
        "cv": float(loss.std() / mean) if mean > 0 else 0.0,
        "final_loss": float(np.exp(second)),
        "window_start": float(ep[0]),
        "window_points": float(ep.size),
    }


def _loss_vote(stats: dict[str, float], chance_loss: float | None) -> bool:
    reference = stats["init_loss"]
    if chance_loss is not None:
        stats["chance_loss"] = float(chance_loss)
        stats["final_to_chance"] = stats["final_loss"] / chance_loss
        reference = min(reference, chance_loss)
    return stats["final_loss"] >= DIVERGENCE_LOSS_RATIO * reference


def _accuracy_vote(stats: dict[str, float], acc: np.ndarray, num_classes: int) -> bool:
    chance = 1.0 / num_classes
    stats["final_acc"] = float(acc[acc.size // 2 :].mean())
    stats["acc_above_chance"] = (stats["final_acc"] - chance) / (1.0 - chance)
    return stats["acc_above_chance"] <= CHANCE_ACC_MARGIN


def classify_records(
    records: Sequence[Mapping[str, float]], num_classes: int | None = None
) -> Classification:
    """Classify the rows of a run's metrics.jsonl (sorted by epoch here; epoch 0 = init)."""
    rows = sorted(records, key=lambda r: r["epoch"])
    if not rows or any("epoch" not in r or "train_loss" not in r for r in rows):
        raise ValueError(
            "records need at least the keys 'epoch' and 'train_loss' in every row; "
            "pass the rows of metrics.jsonl"
        )

    def series(key: str) -> list[float] | None:
        values = [float(v) for r in rows if (v := r.get(key)) is not None]
        return values if len(values) == len(rows) else None

    return classify(
        [r["epoch"] for r in rows],
        [r["train_loss"] for r in rows],
        series("eff_grad_norm"),
        train_acc=series("train_acc"),
        num_classes=num_classes,
    )


def distinct_records(records: Sequence[_Record], source: object = "metrics.jsonl") -> list[_Record]:
    """The records of a run in order, each step once: an exact repeat (a second writer of the
    same run) is dropped; a step recorded twice with different values is a ValueError naming
    `source` (the file) and the fix, since no rule can tell which record is the run's."""
    seen: dict[Any, _Record] = {}
    out = []
    for record in records:
        step = record.get("step", record.get("epoch"))
        if step in seen:
            if seen[step] != record:
                raise ValueError(
                    f"{source}: step {step} is recorded twice with different values (two "
                    "processes wrote this run); rerun it into a fresh --out, or keep one of "
                    "the two runs' lines"
                )
            continue
        seen[step] = record
        out.append(record)
    if len(out) < len(records):
        log.warning("%s: dropped %d repeated records", source, len(records) - len(out))
    return out


def label_run(
    records: Sequence[Mapping[str, Any]], status: str, num_classes: int | None
) -> tuple[str, dict[str, Any]]:
    """(regime, the statistics behind it) of a run's records; a non-finite run is divergence
    however short, a run too short to have a trajectory is `unclassified`."""
    try:
        verdict = classify_records(records, num_classes=num_classes)
    except ValueError as err:
        return ("divergence" if status == "nonfinite" else UNCLASSIFIED), {"reason": str(err)}
    return ("divergence" if status == "nonfinite" else verdict.regime), verdict.stats


# Fewer post-init records than this make a trajectory too short for a trustworthy label.
RELIABLE_RECORDS = 4


def regime_note(records: Sequence[Mapping[str, Any]]) -> str:
    """'' when the label rests on enough records, else a warning that says what to change."""
    after_init = sum(1 for r in records if r["step"] > 0)
    if after_init >= RELIABLE_RECORDS:
        return ""
    return (
        f"only {after_init} records after init: too short for a reliable regime label; "
        "train longer or raise train.records"
    )


def majority_regime(labels: Iterable[str]) -> str:
    """The regime most runs got; a tie goes to the lowest-numbered regime (earliest in REGIMES).

    The regimes follow each other up the ELR axis, so on a tie the ELR keeps the label of the
    smaller ELRs: a higher regime needs a strict majority of seeds. The rule reads only counts
    and REGIMES, never set or dict order, so it is the same in every process. Labels in
    NO_REGIME (e.g. `unclassified`) do not vote; when no label votes the answer is
    UNCLASSIFIED.
    """
    votes = Counter(labels)
    bad = sorted(set(votes) - set(LABELS))
    if bad:
        raise ValueError(f"unknown regime labels {bad}: use one of {LABELS}")
    if not votes:
        raise ValueError("no labels to take the majority of: pass at least one")
    if not any(votes[r] for r in REGIMES):
        return UNCLASSIFIED
    return max(REGIMES, key=lambda r: (votes[r], -REGIMES.index(r)))


def majority_labels(elrs: Sequence[float], regimes: Sequence[str]) -> dict[float, str]:
    """One label per distinct ELR, sorted by ELR: the `majority_regime` of its runs."""
    if len(elrs) != len(regimes):
        raise ValueError(f"{len(elrs)} ELRs but {len(regimes)} labels: pass one label per run")
    groups: dict[float, list[str]] = {}
    for elr, regime in zip(elrs, regimes):
        if not elr > 0:
            raise ValueError(f"elr={elr}: ELRs must be positive")
        groups.setdefault(float(elr), []).append(regime)
    return {elr: majority_regime(labels) for elr, labels in sorted(groups.items())}


def estimate_boundaries(elrs: Sequence[float], regimes: Sequence[str]) -> list[Boundary]:
    """Boundaries between adjacent distinct ELRs (sorted) whose majority labels differ; an ELR
    whose runs name no regime (all in NO_REGIME) is left out."""
    labels = [(e, r) for e, r in majority_labels(elrs, regimes).items() if r in REGIMES]
    return [
        Boundary(lo, hi, below, above)
        for (lo, below), (hi, above) in pairwise(labels)
        if below != above
    ]


def _sweep_votes(rows: Iterable[Mapping[str, Any]]) -> tuple[list[float], list[str]]:
    """(ELRs, labels) of the summary rows that vote: runs that ended (status in FINAL_STATUSES)
    with one of REGIMES at a positive, finite ELR. Cells may be text (summary.csv) or parsed."""
    elrs, labels = [], []
    for row in rows:
        if row.get("status") not in FINAL_STATUSES or row.get("regime") not in REGIMES:
            continue
        try:
            elr = float(row["elr"])
        except (KeyError, TypeError, ValueError):
            continue
        if math.isfinite(elr) and elr > 0:
            elrs.append(elr)
            labels.append(str(row["regime"]))
    return elrs, labels


def sweep_labels(rows: Iterable[Mapping[str, Any]]) -> dict[float, str]:
    """The majority regime per ELR of a sweep's summary rows (sorted by ELR).

    Only runs that ended with a regime label vote (a failed or unclassified run does not); the
    regime map, boundaries.json and the regime lens all read a sweep through this.
    """
    return majority_labels(*_sweep_votes(rows))


def sweep_boundaries(rows: Iterable[Mapping[str, Any]]) -> list[Boundary]:
    """The regime boundaries of a sweep's summary rows (one group of runs): where adjacent
    `sweep_labels` differ."""
    return estimate_boundaries(*_sweep_votes(rows))


def refine_points(boundaries: Sequence[Boundary]) -> list[float]:
    """The ELRs to run next: the geometric midpoint of every boundary bracket."""
    return [b.mid for b in boundaries]
