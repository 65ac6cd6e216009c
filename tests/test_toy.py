"""Tests for the quadratic SI toy (spherelab.toy, spherelab.toy.theory) and run_toy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spherelab.toy import run as toy_module
from spherelab.toy import theory as toy_theory
from spherelab.toy.model import QuadraticSphereToy
from spherelab.toy.run import run_toy, sweep

# Cheap but accurate enough settings for the theory numbers in tests.
LYAP = {"steps": 6000, "chains": 8}


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def toy() -> QuadraticSphereToy:
    return QuadraticSphereToy(d=20, n=10, seed=0)


@pytest.fixture(scope="module")
def eta1(toy: QuadraticSphereToy) -> float:
    return toy.lyapunov_threshold(**LYAP)[0]


def test_loss_is_batched_over_leading_dims(toy: QuadraticSphereToy) -> None:
    u = unit(np.random.default_rng(1).standard_normal((3, 4, toy.d)))
    expected = [[0.5 * np.mean((toy.A @ u[i, j]) ** 2) for j in range(4)] for i in range(3)]
    np.testing.assert_allclose(toy.loss(u), expected, rtol=1e-12)


def test_riemannian_grad_is_tangent_and_is_the_derivative_along_the_sphere(
    toy: QuadraticSphereToy,
) -> None:
    rng = np.random.default_rng(2)
    u, idx = unit(rng.standard_normal(toy.d)), np.array([3, 7, 7])
    g = toy.riemannian_grad(u, idx)
    assert abs(g @ u) < 1e-12
    tangent = rng.standard_normal(toy.d)
    tangent = unit(tangent - (tangent @ u) * u)

    def batch_loss(p: np.ndarray) -> float:
        return 0.5 * np.mean((toy.A[idx] @ p) ** 2)

    h = 1e-6  # along the great circle through u in direction `tangent`
    slope = (
        batch_loss(np.cos(h) * u + np.sin(h) * tangent)
        - batch_loss(np.cos(h) * u - np.sin(h) * tangent)
    ) / (2 * h)
    assert slope == pytest.approx(g @ tangent, rel=1e-6, abs=1e-9)


def test_uniform_loss_is_the_mean_loss_of_random_directions(toy: QuadraticSphereToy) -> None:
    losses = toy.loss(unit(np.random.default_rng(3).standard_normal((40_000, toy.d))))
    stderr = losses.std() / np.sqrt(losses.size)
    assert abs(losses.mean() - toy.uniform_loss()) < 4 * stderr


@pytest.mark.parametrize("factor, converges", [(0.8, True), (1.25, False)])
def test_full_batch_gd_converges_only_below_the_gd_threshold(
    toy: QuadraticSphereToy, factor: float, converges: bool
) -> None:
    eta = factor * toy.gd_threshold()
    u, everything = unit(np.random.default_rng(4).standard_normal(toy.d)), np.arange(toy.n)
    for _ in range(3000):
        u = unit(u - eta * toy.riemannian_grad(u, everything))
    assert (toy.loss(u) < 1e-12) == converges


def test_simulate_is_bitwise_reproducible_for_a_fixed_seed(toy: QuadraticSphereToy) -> None:
    first = toy.simulate([0.05, 0.1, 1.0], steps=500, n_inits=3, seed=5)
    again = toy.simulate([0.05, 0.1, 1.0], steps=500, n_inits=3, seed=5)
    other = toy.simulate([0.05, 0.1, 1.0], steps=500, n_inits=3, seed=6)
    assert np.array_equal(first.losses, again.losses)
    assert not np.array_equal(first.losses, other.losses)


def test_an_elr_trajectory_does_not_depend_on_the_other_elrs_in_the_call(
    toy: QuadraticSphereToy,
) -> None:
    together = toy.simulate([0.05, 0.1, 1.0], steps=300, n_inits=2, keep_positions=True)
    alone = toy.simulate([0.1], steps=300, n_inits=2, keep_positions=True)
    assert np.array_equal(together.positions[1], alone.positions[0])


def test_simulate_starts_from_uniform_points_and_stays_on_the_sphere(
    toy: QuadraticSphereToy,
) -> None:
    sim = toy.simulate([0.1, 10.0], steps=200, n_inits=2000, schedule=[0, 200], keep_positions=True)
    np.testing.assert_allclose(np.linalg.norm(sim.positions, axis=-1), 1.0, atol=1e-12)
    start = sim.losses[0, :, 0]
    assert abs(start.mean() - toy.uniform_loss()) < 4 * start.std() / np.sqrt(start.size)


def test_lyapunov_exponent_is_negative_below_and_positive_above_the_threshold(
    toy: QuadraticSphereToy, eta1: float
) -> None:
    below, above = toy.lyapunov_exponent([0.5 * eta1, 2.0 * eta1], **LYAP)
    assert below < 0 < above


@pytest.mark.parametrize("d, n", [(20, 10), (12, 4)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_measured_convergence_boundary_is_within_10_percent_of_the_lyapunov_threshold(
    d: int, n: int, seed: int
) -> None:
    toy = QuadraticSphereToy(d, n, seed)
    predicted, err = toy.lyapunov_threshold(**LYAP)
    grid = toy.reflection_elr() * np.geomspace(0.25, 4.0, 5)  # placed without the prediction
    _, boundaries = sweep(toy, grid, steps=3000, n_inits=4, rounds=3)
    conv = [b for b in boundaries if b.below == "convergence"]
    assert len(conv) == 1 and conv[0].above == "chaotic_equilibrium"
    assert err < 0.02 * predicted
    assert abs(conv[0].mid / predicted - 1) < 0.10


def test_divergence_loss_matches_the_large_elr_limit_and_exceeds_the_uniform_loss(
    toy: QuadraticSphereToy, eta1: float
) -> None:
    limit = toy.large_elr_limit_loss(steps=2000, chains=32)
    results, _ = sweep(toy, [300 * eta1, 3000 * eta1], steps=3000, n_inits=8, rounds=0)
    for r in results:
        assert r["regime"] == "divergence"
        assert r["mean_loss"] == pytest.approx(limit, rel=0.10)
    assert limit > 1.5 * toy.uniform_loss()


def test_bad_instances_and_elrs_raise_value_errors(toy: QuadraticSphereToy) -> None:
    with pytest.raises(ValueError, match="n < d"):
        QuadraticSphereToy(d=5, n=5)
    with pytest.raises(ValueError, match="positive effective learning rates"):
        toy.simulate([0.1, -1.0], steps=10)


def test_run_toy_writes_json_figure_and_page(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(toy_theory, "LYAPUNOV_STEPS", 4000)  # theory precision is not tested here
    monkeypatch.setattr(toy_module, "PATH_STEPS", 1000)
    summary = run_toy(d=8, n=3, seed=0, out=tmp_path, elrs=[0.02, 0.2, 20.0], steps=1500)
    saved = json.loads((tmp_path / "toy.json").read_text())
    for key in (
        "lyapunov_threshold",
        "lyapunov_threshold_err",
        "large_elr_loss",
        "uniform_loss",
        "gd_threshold",
        "results",
        "convergence_boundary",
    ):
        assert key in saved and saved[key] == summary[key]
    assert {tuple(sorted(r)) for r in saved["results"]} >= {
        ("elr", "final_loss", "mean_loss", "regime", "stats")
    }
    regimes = [r["regime"] for r in saved["results"]]
    assert (regimes[0], regimes[-1]) == ("convergence", "divergence")
    for name in ("toy.png", "toy.svg", "toy.html"):
        assert (tmp_path / name).stat().st_size > 1000
    assert "data:image/png;base64" in (tmp_path / "toy.html").read_text()
