"""Tests for spherelab.regimes: trajectory-based labels and boundary estimation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from spherelab.regimes import (
    REGIMES,
    Boundary,
    classify,
    classify_records,
    classify_stretch,
    estimate_boundaries,
    majority_regime,
    refine_points,
    sweep_boundaries,
    sweep_labels,
)

INIT_LOSS, INIT_GRAD, CLASSES = 9.5, 600.0, 10
# The paper's Figure 1, read off the plot (docs/science.md#figure-1-values):
# ELR -> (regime, train loss at epoch 1000, mean eff. grad norm).
TABLE = {
    1e-5: ("convergence", 7e-3, 7.5),
    1e-4: ("convergence", 9e-4, 0.85),
    5e-4: ("convergence", 2e-4, 0.2),
    1e-3: ("chaotic_equilibrium", 0.5, 55.0),
    2e-3: ("chaotic_equilibrium", 0.9, 36.0),
    5e-3: ("chaotic_equilibrium", 1.6, 24.0),
    5e-2: ("divergence", 10.0, 1.3e4),
    1e-1: ("divergence", 12.0, 3.7e4),
}


def log_epochs(last: int = 1000) -> np.ndarray:
    """0, 1, 2, 3, 5, 8, 13, ... (Fibonacci, i.e. log-spaced) and the last epoch."""
    fib = [1, 2]
    while fib[-1] + fib[-2] < last:
        fib.append(fib[-1] + fib[-2])
    return np.array([0, *fib, last], dtype=np.float64)


def accuracy_from_loss(loss: np.ndarray) -> np.ndarray:
    """Chance (0.1) at the init loss, close to 1 for a tiny loss."""
    return np.clip(1.0 - 0.9 * (loss / INIT_LOSS) ** 0.3, 0.1, 1.0)


def synthetic_run(
    regime: str, level: float, grad: float, rng: np.random.Generator
) -> list[dict[str, float]]:
    """metrics.jsonl rows shaped like one row of the table, with multiplicative noise."""
    ep = log_epochs()
    if regime == "convergence":  # power-law decay reaching `level` at the last epoch
        tau = 20.0
        power = math.log(INIT_LOSS / level) / math.log(1 + ep[-1] / tau)
        loss = INIT_LOSS * (1 + ep / tau) ** -power * rng.lognormal(0, 0.1, ep.size)
        g = INIT_GRAD * (loss / INIT_LOSS) ** (
            math.log(INIT_GRAD / grad) / math.log(INIT_LOSS / level)
        )
    elif regime == "chaotic_equilibrium":  # short transient, then a noisy stationary level
        decay = np.exp(-ep / 3.0)
        loss = (level + (INIT_LOSS - level) * decay) * rng.lognormal(0, 0.25, ep.size)
        g = (grad + (INIT_GRAD - grad) * decay) * rng.lognormal(0, 0.2, ep.size)
    else:  # jumps to the init level or above at once
        loss = level * rng.lognormal(0, 0.15, ep.size)
        g = grad * rng.lognormal(0, 0.3, ep.size)
    loss[0], g[0] = INIT_LOSS, INIT_GRAD
    acc = accuracy_from_loss(loss)
    return [
        {
            "epoch": float(e),
            "step": float(e * 391),
            "train_loss": float(lo),
            "train_acc": float(a),
            "test_loss": float(lo * 1.2),
            "test_acc": float(a * 0.8),
            "eff_grad_norm": float(gg),
            "si_norm": 12.65,
            "angle": 0.01,
        }
        for e, lo, a, gg in zip(ep, loss, acc, g)
    ]


@pytest.mark.parametrize("elr", sorted(TABLE))
def test_each_row_of_the_paper_table_gets_its_regime(elr: float) -> None:
    regime, level, grad = TABLE[elr]
    for noise_seed in range(5):
        rows = synthetic_run(regime, level, grad, np.random.default_rng(noise_seed))
        result = classify_records(rows, num_classes=CLASSES)
        assert result.regime == regime, (elr, noise_seed, result.stats)


def test_loss_alone_labels_every_table_row() -> None:
    for elr, (regime, level, grad) in TABLE.items():
        rows = synthetic_run(regime, level, grad, np.random.default_rng(7))
        ep = [r["epoch"] for r in rows]
        assert classify(ep, [r["train_loss"] for r in rows]).regime == regime, elr


def test_a_slow_run_whose_loss_is_still_high_but_falling_is_convergence() -> None:
    ep = log_epochs()
    loss = INIT_LOSS / (1 + ep / 100.0) ** 1.2  # ends near 0.5, above some regime-2 levels
    assert loss[-1] > 0.1
    assert classify(ep, loss, num_classes=CLASSES).regime == "convergence"


def test_a_nan_loss_is_divergence() -> None:
    ep = log_epochs()
    loss = INIT_LOSS / (1 + ep)
    loss[8] = float("nan")
    result = classify(ep, loss)
    assert result.regime == "divergence"
    assert result.stats["nonfinite"] == 1.0


def test_an_infinite_grad_norm_is_divergence() -> None:
    ep = log_epochs()
    grads = np.full(ep.size, INIT_GRAD)
    grads[-1] = float("inf")
    assert classify(ep, INIT_LOSS / (1 + ep), grads).regime == "divergence"


def test_a_high_loss_with_learning_accuracy_and_calm_gradients_is_not_divergence() -> None:
    rows = synthetic_run("chaotic_equilibrium", 2.2, 20.0, np.random.default_rng(3))
    for row in rows[1:]:
        row["train_acc"] = 0.45  # far above chance although the loss is near log(10)
    assert classify_records(rows, num_classes=CLASSES).regime == "chaotic_equilibrium"


def test_stats_hold_what_the_label_was_based_on_and_serialise() -> None:
    rows = synthetic_run("divergence", 10.0, 1.3e4, np.random.default_rng(0))
    result = classify_records(rows, num_classes=CLASSES)
    for key in (
        "slope",
        "level_change",
        "cv",
        "final_to_init",
        "final_to_chance",
        "acc_above_chance",
        "grad_jump",
        "divergence_votes",
    ):
        assert math.isfinite(result.stats[key]), key
    assert result.stats["grad_jump"] > 10
    assert json.loads(json.dumps(result.to_dict()))["regime"] == "divergence"


def test_records_are_sorted_by_epoch_before_classifying() -> None:
    rows = synthetic_run("convergence", 2e-4, 0.2, np.random.default_rng(1))
    shuffled = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))]
    assert classify_records(shuffled, CLASSES) == classify_records(rows, CLASSES)


def test_bad_trajectories_raise_value_errors_naming_the_problem() -> None:
    with pytest.raises(ValueError, match="equally long"):
        classify([0, 1, 2], [1.0, 0.5])
    with pytest.raises(ValueError, match="increasing"):
        classify([0, 2, 1, 3], [1.0, 0.5, 0.4, 0.3])
    with pytest.raises(ValueError, match="init_loss"):
        classify([0, 1, 2], [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="eff_grad_norm"):
        classify([0, 1, 2], [1.0, 0.5, 0.4], [600.0, 10.0])
    with pytest.raises(ValueError, match="train_loss"):
        classify_records([{"epoch": 0}, {"epoch": 1}, {"epoch": 2}])


def table_sweep() -> tuple[list[float], list[str]]:
    return list(TABLE), [regime for regime, _, _ in TABLE.values()]


def test_boundaries_of_a_labelled_grid_bracket_each_label_change() -> None:
    elrs, labels = table_sweep()
    order = np.random.default_rng(0).permutation(len(elrs))  # input order must not matter
    found = estimate_boundaries([elrs[i] for i in order], [labels[i] for i in order])
    assert found == [
        Boundary(5e-4, 1e-3, "convergence", "chaotic_equilibrium"),
        Boundary(5e-3, 5e-2, "chaotic_equilibrium", "divergence"),
    ]


def test_boundaries_use_the_majority_label_across_seeds() -> None:
    elrs, labels = table_sweep()
    many_elrs, many_labels = [], []
    for elr, label in zip(elrs, labels):
        dissent = REGIMES[(REGIMES.index(label) + 1) % 3]
        many_elrs += [elr] * 3
        many_labels += [label, label, dissent]  # one outlier seed per ELR
    assert estimate_boundaries(many_elrs, many_labels) == estimate_boundaries(elrs, labels)


def test_a_tie_between_seeds_goes_to_the_lower_numbered_regime_in_any_order() -> None:
    for labels in (
        ["chaotic_equilibrium", "convergence"],
        ["convergence", "chaotic_equilibrium"],
        ["divergence", "chaotic_equilibrium"],
        ["divergence", "chaotic_equilibrium", "convergence"],
    ):
        lowest = min(labels, key=REGIMES.index)
        assert majority_regime(labels) == lowest
        assert majority_regime(reversed(labels)) == lowest
    assert majority_regime(["divergence", "divergence", "convergence"]) == "divergence"
    with pytest.raises(ValueError, match="unknown regime"):
        majority_regime(["convergence", "convergance"])
    with pytest.raises(ValueError, match="at least one"):
        majority_regime([])


def test_sweep_labels_count_only_runs_that_ended_with_a_regime() -> None:
    rows = [  # cells as summary.csv holds them (text)
        {"elr": "0.001", "status": "finished", "regime": "chaotic_equilibrium"},
        {"elr": "0.001", "status": "nonfinite", "regime": "convergence"},
        {"elr": "0.001", "status": "failed", "regime": ""},
        {"elr": "0.001", "status": "finished", "regime": "unclassified"},
        {"elr": "0.01", "status": "unfinished", "regime": "divergence"},
        {"elr": "0.1", "status": "finished", "regime": "divergence"},
    ]
    assert sweep_labels(rows) == {1e-3: "convergence", 0.1: "divergence"}
    assert sweep_boundaries(rows) == [Boundary(1e-3, 0.1, "convergence", "divergence")]
    assert sweep_labels([]) == {} and sweep_boundaries([]) == []


def test_a_stretch_is_labelled_with_the_whole_stretch_as_the_window() -> None:
    epochs = [4.0, 6.0, 8.0, 10.0]
    falling = classify_stretch(epochs, [1.0, 0.4, 0.2, 0.1], init_loss=12.0, num_classes=10)
    assert falling.regime == "convergence" and falling.stats["window_start"] == 4.0
    at_chance = classify_stretch(
        epochs, [0.5, 0.55, 0.48, 0.52], init_loss=12.0, num_classes=10, train_acc=[0.1] * 4
    )
    assert at_chance.stats["available_votes"] == 2.0  # loss and accuracy; no init gradient
    assert at_chance.regime == "chaotic_equilibrium"  # a strict majority is needed to diverge
    with pytest.raises(ValueError, match="epochs must be > 0"):
        classify_stretch([0.0, 1.0, 2.0], [1.0, 0.5, 0.4], init_loss=2.0)


def test_refine_points_are_geometric_midpoints_inside_each_bracket() -> None:
    boundaries = estimate_boundaries(*table_sweep())
    points = refine_points(boundaries)
    assert len(points) == len(boundaries)
    for b, p in zip(boundaries, points):
        assert b.lo < p < b.hi
        assert math.isclose(math.log(p) - math.log(b.lo), math.log(b.hi) - math.log(p))
        assert b.to_dict()["mid"] == p


def test_boundary_inputs_are_checked() -> None:
    with pytest.raises(ValueError, match="one label per run"):
        estimate_boundaries([1e-3, 2e-3], ["convergence"])
    with pytest.raises(ValueError, match="unknown regime"):
        estimate_boundaries([1e-3], ["exploded"])
    with pytest.raises(ValueError, match="positive"):
        estimate_boundaries([-1e-3], ["convergence"])


def test_toy_model_loss_trajectories_are_labelled_by_the_same_classifier() -> None:
    from spherelab.toy.model import QuadraticSphereToy

    toy = QuadraticSphereToy(d=12, n=4, seed=0)
    eta1, _ = toy.lyapunov_threshold(steps=4000, chains=4)
    elrs = [0.5 * eta1, 1.15 * eta1, 1e3 * eta1]  # regime 2 is narrow: eta_1 to ~1.3 eta_1
    sim = toy.simulate(elrs, steps=4000, n_inits=4)
    labels = [
        classify(sim.steps, losses.mean(0), init_loss=toy.uniform_loss()).regime
        for losses in sim.losses
    ]
    assert labels == list(REGIMES)
