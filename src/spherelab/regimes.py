"""Label a run's regime from its trajectory (never from its ELR) and locate regime boundaries.

The three regimes (docs/science.md#the-three-regimes): ``convergence`` (the loss keeps falling,
in log space, with no floor), ``chaotic_equilibrium`` (after a transient the loss is stationary
well below the init level), ``divergence`` (the loss sits at the chance/init level, accuracy at
chance, the effective gradient norm jumped, each step turns by more than 45 degrees). A
trajectory that does not show its regime yet (too short, still in its transient, or whose
signals contradict each other) is ``undetermined``: the classifier says so rather than guess
(docs/science.md#labelling-a-run). ``classify`` reads losses at log-spaced epochs (epoch 0 =
init); ``classify_stretch`` applies the same rules to a stretch of records (the regime lens);
``label_run`` labels a run's records, with its maximal Lyapunov exponent where one was measured.
``majority_regime`` is the one rule for several seeds' labels at one ELR; ``sweep_labels``,
``estimate_boundaries`` / ``sweep_boundaries`` and ``refine_points`` turn a labelled ELR sweep
into a label per ELR, brackets and the next ELRs to run (one bisection round in log-ELR).
"""

from __future__ import annotations

import dataclasses
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
# The label of a trajectory that does not show its regime yet: too short or still in its
# transient, or signals that contradict each other (the reason says which and what to change).
UNDETERMINED = "undetermined"
# Labels a run can get that name no regime: shown as such in reports, never a vote on a
# boundary or a majority. A new one is one more entry here.
NO_REGIME = (UNCLASSIFIED, UNDETERMINED)
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
# ...and the descent goes on to the end: over the window's second half the loss (or its lower
# envelope) still falls by >= 10^0.25 ~ 1.8x per decade. A regime-2 run caught at the end of its
# transient falls through the first half and is flat in the second (a loss that stopped falling
# inside the window: `undetermined`, since a plateau only one half-decade long is no proof).
LATE_SLOPE = -0.25
# ...and the descent does not slow down: the second half's slope is >= 70% of the first
# half's. A regime-1 loss falls like a power law (a straight line in log-log) or faster; a
# regime-2 loss nearing its level decelerates, before its plateau shows.
DECELERATION = 0.7
# ...and the window starts after the transient: at epoch >= 5 (a run of >= 50 epochs). A
# regime-2 run's loss falls for a few epochs before it settles (the paper: a short transient;
# Figure 1's shape: an e-folding time of ~3 epochs), and while it falls its loss can look like
# a regime-1 run's (a straight fall in log-log): a shorter run's fall is `undetermined` ("train
# longer"), unless it reached the floor. 3 is the least value at which no truncation (20-100
# epochs) of the synthetic Figure-1 runs or of the MNIST-1D truth map is labelled wrongly.
MIN_CONVERGENCE_EPOCH = 5.0
# ...and smoothly: the loss rises between at most 1 in 4 pairs of consecutive records of the
# window. Regime 1's SGD noise dies out with its gradient (a catapult spike is one rise); a
# regime-2 run is held up by noise, which shows as ups and downs already in its transient,
# when its loss may still fall as fast as a regime-1 run's.
MAX_RISING_STEPS = 0.25
# A slow but steady descent (the halves' levels drop by >= 25% and >= 80% of all pairs of
# records fall, stationary noise gives ~50%) is a slow regime-1 run or a regime-2 transient:
# the loss alone cannot tell them apart, so it is `undetermined` (a Lyapunov exponent decides).
STEADY_FALLING_PAIRS = 0.8
# A loss whose level dropped by >= 25% with a slope <= -0.3 and >= 70% of its pairs falling
# drifts down: a stationary run's noise gives |slope| ~0.15 and ~50% +- 10% falling pairs.
# It is a run near the 1|2 boundary (a regime-2 run still settling, or a regime-1 run slowed
# by spikes): `undetermined`.
DRIFT_SLOPE = -0.3
DRIFT_FALLING_PAIRS = 0.7
# A loss that rises as fast (slope >= +0.5 and the level up by >= 25%) is still in a transient
# (a branch climbing from a converged start); anything else that does not fall is stationary.
# A loss below 1e-4 of its init level has converged whatever its trend: it may stall at the
# floating-point floor (a float32 loss or update stops resolving). The lowest regime-2 level
# seen is ~5% of init (paper, ELR 1e-3), 500x above.
FLOOR_LOSS_RATIO = 1e-4
# A loss that varies by < 0.1% (coefficient of variation) over a whole decade of epochs has
# stopped moving: the weights froze (a float32 update below the weights' resolution). A
# chaotic equilibrium fluctuates (~10-30%), a diverged run far more; a frozen run below half
# its init level is converged, one above it `undetermined`.
FROZEN_CV = 1e-3
FROZEN_LEVEL_RATIO = 0.5
# Divergence votes. Loss: at or above 90% of the init level (the loss of a random direction:
# every step of a diverged run lands on an unrelated direction; the paper's diverged runs sit at
# or above init).
DIVERGENCE_LOSS_RATIO = 0.9
# ...and no vote either way between that and the learned level: below 90% of the lower of
# init and chance, or below a quarter of init. Diverged runs may sit well below init
# (Fashion-MNIST ConvNet-SI: 0.4-0.6 x init, MNIST-1D MLP-SI: 0.75-1 x init), and a regime-2
# run near the 2|3 boundary can pass chance when the init level is far above it (Figure 1: init
# 9.5, chance 2.3). With the loss alone in between: `undetermined`.
LEARNED_LOSS_RATIO = 0.25
# Accuracy: within 10% of the chance-to-perfect range above chance (diverged runs: 11% for 10
# classes; regime-2 runs are far above).
CHANCE_ACC_MARGIN = 0.1
# Effective gradient norm: final/init >= 10. Diverged runs jump 20-60x; regime 1 and 2 runs
# end 10-1000x *below* their init value.
GRAD_JUMP = 10.0
# Step angle: tan(per-step angle) = ELR x effective gradient norm >= 1 (every step turns by
# >= 45 degrees: the paper's regime-3 signature, tan >> 1). Regime-2 runs: 0.05-0.25
# (paper's Figure 1 and MNIST-1D); diverged ones: 3-1000.
STEP_TAN_DIVERGED = 1.0
# Lyapunov exponent (per step, natural log; value +- 1-sigma error): it votes only when it is
# reliable, i.e. LYAPUNOV_SIGMAS errors away from the threshold. Reliably > 0: chaotic, so not
# regime 1. Reliably below LYAPUNOV_ZERO: not chaotic, so neither regime 2 nor 3 (a converging
# run's exponent is ~0: its flat directions neither grow nor shrink; regime-2 MNIST-1D runs
# give +0.05 to +0.09 per step).
LYAPUNOV_SIGMAS = 2.0
LYAPUNOV_ZERO = 1e-3
# Logs of losses that are exactly 0 use this floor.
LOSS_FLOOR = 1e-300


@dataclass(frozen=True)
class Classification:
    """A regime label (one of LABELS), the statistics it was based on (all floats, JSON-ready)
    and one sentence saying why."""

    regime: str
    stats: dict[str, float]
    reason: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"regime": self.regime, "stats": dict(self.stats), "reason": self.reason}


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


@dataclass(frozen=True)
class _Window:
    """Records a label rests on and the references they are judged against."""

    ep: np.ndarray
    loss: np.ndarray
    acc: np.ndarray | None  # train accuracy (fractions); None without num_classes
    grad: np.ndarray | None  # effective gradient norm
    elr: np.ndarray | None  # the ELR at each record (tan of the step angle: elr x grad)
    init_loss: float | None  # the loss at a random init (None: unknown, e.g. a lost origin)
    init_grad: float | None  # the effective gradient norm there (None: unknown)
    chance_loss: float | None
    num_classes: int | None
    whole_run: bool = True  # False: a stretch of a run (no init transient to wait out)

    def final(self) -> _Window:
        """The final window (the last decade of epochs > 0) of a whole trajectory."""
        keep = _final_window(self.ep)

        def cut(v: np.ndarray | None) -> np.ndarray | None:
            return v[keep] if v is not None else None

        return dataclasses.replace(
            self,
            ep=self.ep[keep],
            loss=self.loss[keep],
            acc=cut(self.acc),
            grad=cut(self.grad),
            elr=cut(self.elr),
        )

    def nonfinite(self) -> bool:
        return not np.all(np.isfinite(self.loss)) or (
            self.grad is not None and not np.all(np.isfinite(self.grad))
        )


def classify(
    epochs: Sequence[float] | np.ndarray,
    train_loss: Sequence[float] | np.ndarray,
    eff_grad_norm: Sequence[float] | None = None,
    *,
    init_loss: float | None = None,
    chance_loss: float | None = None,
    train_acc: Sequence[float] | None = None,
    num_classes: int | None = None,
    lyapunov: tuple[float, float] | None = None,
) -> Classification:
    """Label one trajectory (first point = epoch 0 = init) as one of LABELS.

    ``init_loss`` defaults to the first loss, ``chance_loss`` to log(num_classes); accuracy
    (fractions; used only with ``num_classes``) and effective gradient norms are optional extra
    evidence for divergence; ``lyapunov`` is (maximal exponent per step, its 1-sigma error), a
    vote where it was measured. Every decision input is returned in ``stats``.
    """
    ep, loss = _validated(epochs, train_loss)
    grads = _optional_series("eff_grad_norm", eff_grad_norm, ep.size)
    acc = _optional_series("train_acc", train_acc, ep.size)
    window = _Window(
        ep,
        loss,
        acc if num_classes is not None else None,
        grads,
        None,
        _init_loss(init_loss if init_loss is not None else loss[0]),
        float(grads[0]) if grads is not None and grads[0] > 0 else None,
        _chance_loss(chance_loss, num_classes),
        num_classes,
    )
    return _judge(window if window.nonfinite() else window.final(), lyapunov)


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
    window = _Window(
        ep,
        loss,
        acc if num_classes is not None else None,
        None,
        None,
        _init_loss(init_loss),
        None,
        _chance_loss(chance_loss, num_classes),
        num_classes,
        whole_run=False,
    )
    return _judge(window, None)


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


def _judge(w: _Window, lyapunov: tuple[float, float] | None) -> Classification:
    """The labelling rule itself, on the records of a window (epochs > 0)."""
    if w.nonfinite():
        return Classification("divergence", {"nonfinite": 1.0}, "a non-finite loss or gradient")
    stats: dict[str, float] = {"nonfinite": 0.0, **_trend_stats(w.ep, w.loss)}
    stats["short_run"] = float(w.whole_run and w.ep[0] < MIN_CONVERGENCE_EPOCH)
    scale = w.init_loss or w.chance_loss or float(w.loss[0])
    if w.init_loss is not None:
        stats["init_loss"] = w.init_loss
    stats["final_to_init"] = stats["final_loss"] / scale
    votes = {
        "loss level": _loss_vote(stats, w.init_loss, w.chance_loss),
        "accuracy at chance": _accuracy_vote(stats, w.acc, w.num_classes),
        "gradient jump": _grad_vote(stats, w.grad, w.init_grad),
        "step angle": _step_vote(stats, w.grad, w.elr),
    }
    cast = {name: v for name, v in votes.items() if v is not None}
    stats["divergence_votes"] = float(sum(cast.values()))
    stats["available_votes"] = float(len(cast))
    chaos = _lyapunov_vote(stats, lyapunov)
    regime, reason = _decide(stats, cast, chaos)
    return Classification(regime, stats, reason)


def _decide(
    stats: Mapping[str, float], votes: Mapping[str, bool], chaos: bool | None
) -> tuple[str, str]:
    """(label, why) from the trend of the loss, the divergence votes (a strict majority of those
    cast) and the Lyapunov vote (True: reliably chaotic, False: reliably not, None: no vote)."""
    trend, why = _trend(stats)
    lam = f"the Lyapunov exponent {stats.get('lyapunov', math.nan):.3g} per step"
    if trend == "frozen_high":
        return UNDETERMINED, why
    yes = [name for name, v in votes.items() if v]
    if 2 * len(yes) > len(votes) and trend not in ("floor", "frozen"):
        if chaos is False:
            return UNDETERMINED, f"divergence signals ({', '.join(yes)}) but {lam} is not positive"
        return "divergence", f"{len(yes)} of {len(votes)} divergence signals: {', '.join(yes)}"
    if trend in ("floor", "frozen", "falling"):
        if chaos is True:
            return UNDETERMINED, f"{why}, but {lam} is reliably positive (chaotic)"
        return "convergence", why
    if not votes:
        return UNDETERMINED, (
            f"{why}, at a loss level between learned and diverged, with no accuracy, gradient "
            "or ELR records to tell regime 2 from regime 3"
        )
    if trend == "flat":
        if chaos is False:
            return UNDETERMINED, f"{why}, but {lam} is not positive (no chaos)"
        return "chaotic_equilibrium", why
    if chaos is True:
        return "chaotic_equilibrium", f"{why}; {lam} is reliably positive (chaotic)"
    if chaos is False and trend == "slow":
        return "convergence", f"{why}; {lam} is not positive (no chaos)"
    return UNDETERMINED, f"{why}: train longer (or measure the Lyapunov exponent)"


def _trend(stats: Mapping[str, float]) -> tuple[str, str]:
    """What the loss does over the window (floor, frozen, frozen_high, settling, noisy, short,
    falling, slow, drifting, rising or flat) and a phrase that says so with the numbers."""
    slope, change = stats["slope"], stats["level_change"]
    numbers = f"(log-log slope {slope:.2f}, level change {change:+.0%})"
    if stats["final_to_init"] <= FLOOR_LOSS_RATIO:
        return "floor", f"the loss fell to {stats['final_to_init']:.1e} of its init level"
    if stats["cv"] <= FROZEN_CV:
        if stats["final_to_init"] < FROZEN_LEVEL_RATIO:
            return "frozen", "the loss stopped changing at a low level (the run froze)"
        return "frozen_high", "the loss stopped changing at a high level (the run barely moves)"
    dropped = change <= -CONVERGENCE_LEVEL_DROP
    if slope <= CONVERGENCE_SLOPE and (dropped or stats["envelope_slope"] <= ENVELOPE_SLOPE):
        late, early = stats["late_slope"], stats["early_slope"]
        if (late > LATE_SLOPE and stats["late_envelope_slope"] > ENVELOPE_SLOPE) or (
            late > DECELERATION * early
        ):
            return "settling", f"the loss fell, then stopped falling in the window {numbers}"
        if stats["rising_steps"] > MAX_RISING_STEPS:
            return "noisy", (
                f"the loss falls but fluctuates like SGD noise {numbers}, rising between "
                f"{stats['rising_steps']:.0%} of its records: regime 1 near its boundary or a "
                "regime-2 transient"
            )
        if stats["short_run"]:
            return "short", (
                f"the loss falls {numbers} but the run is short (its last decade starts at "
                f"epoch {stats['window_start']:.3g}): a regime-2 transient can fall alike"
            )
        return "falling", f"the loss keeps falling {numbers}"
    if dropped and stats["falling_pairs"] >= STEADY_FALLING_PAIRS:
        return "slow", f"the loss still falls, slowly {numbers}: regime 1 or a regime-2 transient"
    if dropped and slope <= DRIFT_SLOPE and stats["falling_pairs"] >= DRIFT_FALLING_PAIRS:
        return "drifting", f"the loss drifts down {numbers}, neither stationary nor converging"
    if slope >= -CONVERGENCE_SLOPE and change >= CONVERGENCE_LEVEL_DROP:
        return "rising", f"the loss still rises {numbers}"
    return "flat", f"the loss is stationary {numbers}"


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
    """Robust log-log slopes (loss and its running minimum, over the window and over its second
    half), level change between the halves' medians, CV and the final level (median of the
    second half) over the window. Slopes are per decade of epochs (log10 of both)."""
    log_ep, log_loss = np.log10(ep), np.log10(np.maximum(loss, LOSS_FLOOR))
    envelope = np.minimum.accumulate(log_loss)
    half = loss.size // 2
    late = slice(min(half, loss.size - 2), None)  # >= 2 points
    first, second = np.median(log_loss[:half]), np.median(log_loss[half:])
    mean = loss.mean()
    return {
        "slope": _theil_sen(log_ep, log_loss),
        "envelope_slope": _theil_sen(log_ep, envelope),
        "early_slope": _theil_sen(log_ep[: max(half, 2)], log_loss[: max(half, 2)]),
        "late_slope": _theil_sen(log_ep[late], log_loss[late]),
        "late_envelope_slope": _theil_sen(log_ep[late], envelope[late]),
        "falling_pairs": float(np.mean(_pair_slopes(log_ep, log_loss) < 0))
        if loss.size > 1
        else 0.0,
        "level_change": float(10.0 ** (second - first) - 1.0),
        "cv": float(loss.std() / mean) if mean > 0 else 0.0,
        "rising_steps": float(np.mean(np.diff(log_loss) > 0)) if loss.size > 1 else 0.0,
        "final_loss": float(10.0**second),
        "window_start": float(ep[0]),
        "window_points": float(ep.size),
    }


def _loss_vote(
    stats: dict[str, float], init_loss: float | None, chance_loss: float | None
) -> bool | None:
    """True at the diverged level, False at a learned one, None (no vote) in between."""
    final = stats["final_loss"]
    if chance_loss is not None:
        stats["chance_loss"] = float(chance_loss)
        stats["final_to_chance"] = final / chance_loss
    known = [x for x in (init_loss, chance_loss) if x is not None]
    if not known:
        return None
    if init_loss is not None and final >= DIVERGENCE_LOSS_RATIO * init_loss:
        return True
    if final < DIVERGENCE_LOSS_RATIO * min(known):
        return False
    if init_loss is not None and final < LEARNED_LOSS_RATIO * init_loss:
        return False
    return None


def _accuracy_vote(
    stats: dict[str, float], acc: np.ndarray | None, num_classes: int | None
) -> bool | None:
    if acc is None or num_classes is None:
        return None
    chance = 1.0 / num_classes
    stats["final_acc"] = float(acc[acc.size // 2 :].mean())
    stats["acc_above_chance"] = (stats["final_acc"] - chance) / (1.0 - chance)
    return stats["acc_above_chance"] <= CHANCE_ACC_MARGIN


def _grad_vote(
    stats: dict[str, float], grad: np.ndarray | None, init_grad: float | None
) -> bool | None:
    if grad is None or init_grad is None:
        return None
    stats["grad_jump"] = float(np.median(grad) / init_grad)
    return stats["grad_jump"] >= GRAD_JUMP


def _step_vote(
    stats: dict[str, float], grad: np.ndarray | None, elr: np.ndarray | None
) -> bool | None:
    if grad is None or elr is None or not np.all(np.isfinite(elr)):
        return None
    stats["step_tan"] = float(np.median(elr * grad))
    return stats["step_tan"] >= STEP_TAN_DIVERGED


def _lyapunov_vote(stats: dict[str, float], lyapunov: tuple[float, float] | None) -> bool | None:
    """True: reliably positive (chaotic); False: reliably below LYAPUNOV_ZERO; None: no vote
    (not measured, not finite, no positive error, or not reliably either)."""
    if lyapunov is None:
        return None
    value, err = (float(x) if x is not None else math.nan for x in lyapunov)
    if not (math.isfinite(value) and math.isfinite(err) and err > 0):
        return None
    stats["lyapunov"], stats["lyapunov_err"] = value, err
    if value - LYAPUNOV_SIGMAS * err > 0 and value > LYAPUNOV_ZERO:
        return True
    if value + LYAPUNOV_SIGMAS * err < LYAPUNOV_ZERO:
        return False
    return None


def classify_records(
    records: Sequence[Mapping[str, Any]],
    num_classes: int | None = None,
    *,
    init: Mapping[str, Any] | None = None,
    lyapunov: tuple[float, float] | None = None,
) -> Classification:
    """Classify the rows of a run's metrics.jsonl (sorted by epoch here; epoch 0 = the run's
    start). ``init`` is the init record of the scratch run a fine-tune branch started from (its
    train_loss and eff_grad_norm are the references; a missing key: unknown, and the votes that
    need it abstain); None: the run's own first record. ``lyapunov``: as in `classify`."""
    rows = sorted(records, key=lambda r: r["epoch"])
    if not rows or any("epoch" not in r or "train_loss" not in r for r in rows):
        raise ValueError(
            "records need at least the keys 'epoch' and 'train_loss' in every row; "
            "pass the rows of metrics.jsonl"
        )

    def series(key: str) -> np.ndarray | None:
        values = [float(v) for r in rows if (v := r.get(key)) is not None]
        return np.asarray(values) if len(values) == len(rows) else None

    ep, loss = _validated([r["epoch"] for r in rows], [r["train_loss"] for r in rows])
    grads, acc = series("eff_grad_norm"), series("train_acc")
    origin = rows[0] if init is None else init
    init_loss, init_grad = origin.get("train_loss"), origin.get("eff_grad_norm")
    window = _Window(
        ep,
        loss,
        acc if num_classes is not None else None,
        grads,
        series("elr"),
        _init_loss(init_loss) if init_loss is not None and math.isfinite(init_loss) else None,
        float(init_grad) if init_grad is not None and init_grad > 0 else None,
        _chance_loss(None, num_classes),
        num_classes,
    )
    return _judge(window if window.nonfinite() else window.final(), lyapunov)


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
    records: Sequence[Mapping[str, Any]],
    status: str,
    num_classes: int | None,
    *,
    lyapunov: tuple[float, float] | None = None,
    init: Mapping[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """(label, the statistics behind it) of a run's records; ``stats["reason"]`` says why in
    one sentence. A non-finite run is divergence however short, a run too short to have a
    trajectory is `unclassified`. ``lyapunov`` = (maximal Lyapunov exponent per step, its
    1-sigma error) votes where it was measured; ``init``: see `classify_records`."""
    try:
        verdict = classify_records(records, num_classes=num_classes, init=init, lyapunov=lyapunov)
    except ValueError as err:
        regime = "divergence" if status == "nonfinite" else UNCLASSIFIED
        return regime, {"reason": str(err)}
    if status == "nonfinite":
        return "divergence", {**verdict.stats, "reason": "the run stopped at a non-finite loss"}
    return verdict.regime, {**verdict.stats, "reason": verdict.reason}


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
