"""The quadratic SI toy experiment (docs/science.md#the-toy-model, docs/toy.md): ELR sweep, regime
labels, boundaries, outputs.

f_i(u) = 1/2 (a_i . u)^2 on the unit sphere S^(d-1), a_i iid N(0, I_d), n < d. The instance and
its vectorised SGD-on-the-sphere simulation live in ``spherelab.toy.model`` (QuadraticSphereToy,
ToySimulation, log_schedule), the theory numbers in ``spherelab.toy.theory``, the figure and
HTML page in ``spherelab.toy.figures``. ``run_toy`` is the end-to-end experiment: theory, an
ELR sweep labelled by ``spherelab.regimes.classify``, bisection of the boundaries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spherelab.io import atomic_write_text, dumps
from spherelab.regimes import Boundary, classify, estimate_boundaries, refine_points
from spherelab.toy import figures as toy_plots
from spherelab.toy import theory as toy_theory
from spherelab.toy.model import (
    DEFAULT_INITS,
    QuadraticSphereToy,
    ToySimulation,
    log_schedule,
)

log = logging.getLogger("spherelab")

# Default sweep: 17 ELRs, 4 per decade, from 0.1x to 1000x the step 2 / mean|a_i|^2 at which a
# single SGD step reflects the sampled component (eta_1 sits just below it), SGD steps per run,
# and bisection rounds (each halves the log-width of every bracket: 4 rounds take the 1.78x grid
# ratio to 1.04x, well inside the 10% the theory is tested to). Initial points per ELR:
# toy_model.DEFAULT_INITS.
DEFAULT_GRID = np.geomspace(0.1, 1000.0, 17)
DEFAULT_STEPS = 20_000
REFINE_ROUNDS = 4
# Points of the Lyapunov-exponent curve drawn in the figure (0.25x to 4x eta_1).
CURVE_POINTS = 25
# The d = 3 picture: ELRs as multiples of that instance's eta_1 (regimes 1 and 2) and of its
# 2 / mean|a_i|^2 (regime 3), and the first steps recorded densely so the path is visible.
PATH_MULTIPLES = (0.5, 2.0)
PATH_LARGE_MULTIPLE = 1000.0
PATH_DENSE_STEPS = 100
# Steps of the d = 3 runs: enough for the classifier (that instance's exponents are larger).
PATH_STEPS = 5_000


def label_simulation(sim: ToySimulation, init_loss: float) -> list[dict[str, Any]]:
    """One result per ELR: the init-averaged trajectory labelled by ``regimes.classify``.

    Averaging L over the K initial points is the expected loss of the run; near eta_1 single
    trajectories are intermittent (log L is a random walk with small drift), the mean is not.
    Same classifier as for networks, loss only, with init_loss = the uniform-direction loss.
    """
    window = sim.steps >= 0.1 * sim.steps[-1]
    out = []
    for elr, losses in zip(sim.elrs, sim.losses):
        mean = losses.mean(axis=0)
        label = classify(sim.steps, mean, init_loss=init_loss)
        out.append(
            {
                "elr": float(elr),
                "final_loss": float(mean[-1]),
                "mean_loss": float(mean[window].mean()),
                "regime": label.regime,
                "stats": label.stats,
            }
        )
    return out


def sweep(
    toy: QuadraticSphereToy,
    elrs: Sequence[float] | np.ndarray,
    steps: int,
    n_inits: int = DEFAULT_INITS,
    rounds: int = REFINE_ROUNDS,
) -> tuple[list[dict[str, Any]], list[Boundary]]:
    """Simulate and label ``elrs``, then ``rounds`` bisection rounds at every boundary.

    Returns the per-ELR results (sorted by ELR) and the final boundary brackets.
    """
    uniform = toy.uniform_loss()
    results = label_simulation(toy.simulate(elrs, steps, n_inits), uniform)
    for _ in range(rounds):
        points = refine_points(_boundaries(results))
        if not points:
            break
        results += label_simulation(toy.simulate(points, steps, n_inits), uniform)
    results.sort(key=lambda r: r["elr"])
    return results, _boundaries(results)


def _boundaries(results: Sequence[dict[str, Any]]) -> list[Boundary]:
    return estimate_boundaries([r["elr"] for r in results], [r["regime"] for r in results])


def run_toy(
    d: int = 20,
    n: int = 10,
    seed: int = 0,
    out: str | Path = "toy_out",
    elrs: Sequence[float] | np.ndarray | None = None,
    steps: int | None = None,
) -> dict[str, Any]:
    """Theory + measured regimes of one toy instance; writes toy.json, toy.png/svg, toy.html.

    Default ELRs: DEFAULT_GRID times ``reflection_elr()``; default steps: DEFAULT_STEPS.
    """
    start = time.perf_counter()
    toy = QuadraticSphereToy(d, n, seed)
    steps = DEFAULT_STEPS if steps is None else int(steps)
    if elrs is None:
        elrs = DEFAULT_GRID * toy.reflection_elr()
    eta1, eta1_err = toy.lyapunov_threshold()
    summary: dict[str, Any] = {
        "d": d,
        "n": n,
        "seed": seed,
        "batch_size": toy.batch_size,
        "steps": steps,
        "n_inits": DEFAULT_INITS,
        "lyapunov_threshold": eta1,
        "lyapunov_threshold_err": eta1_err,
        "large_elr_loss": toy.large_elr_limit_loss(),
        "uniform_loss": toy.uniform_loss(),
        "gd_threshold": toy.gd_threshold(),
    }
    results, boundaries = sweep(toy, elrs, steps)
    curve = eta1 * np.geomspace(0.25, 4.0, CURVE_POINTS)
    summary["lyapunov_curve"] = {
        "eta": curve.tolist(),
        "exponent": toy.lyapunov_exponent(
            curve, steps=toy_theory.LYAPUNOV_STEPS // 5, chains=4
        ).tolist(),
    }
    conv = next((b for b in boundaries if b.below == "convergence"), None)
    summary["results"] = results
    summary["boundaries"] = [b.to_dict() for b in boundaries]
    summary["convergence_boundary"] = conv.mid if conv else None
    summary["convergence_boundary_bracket"] = conv.to_dict() if conv else None
    log.info(
        "toy d=%d n=%d seed=%d: eta_1 = %.4g +- %.2g, measured boundary %s",
        d,
        n,
        seed,
        eta1,
        eta1_err,
        summary["convergence_boundary"],
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary["files"] = toy_plots.write_outputs(summary, sphere_paths(seed), out)
    summary["seconds"] = time.perf_counter() - start
    atomic_write_text(out / "toy.json", dumps(summary, indent=2))
    return summary


def sphere_paths(seed: int = 0, steps: int | None = None, n_inits: int = 4) -> dict[str, Any]:
    """A d = 3, n = 2 instance with one trajectory per regime, for the sphere picture.

    Each path is labelled by the same classifier as the sweep (init-averaged over n_inits);
    the first PATH_DENSE_STEPS points from the highest-loss start are returned, (3, steps, 3).
    The zero-loss set is the pair of poles +-w, w spanning the null space of A.
    """
    steps = PATH_STEPS if steps is None else steps
    toy = QuadraticSphereToy(3, 2, seed)
    eta1, _ = toy.lyapunov_threshold(steps=toy_theory.LYAPUNOV_STEPS // 5, chains=4)
    elrs = [eta1 * m for m in PATH_MULTIPLES] + [toy.reflection_elr() * PATH_LARGE_MULTIPLE]
    schedule = np.union1d(np.arange(PATH_DENSE_STEPS), log_schedule(steps))
    sim = toy.simulate(elrs, steps, n_inits, schedule=schedule, keep_positions=True)
    labels = label_simulation(sim, toy.uniform_loss())
    far = int(np.argmax(sim.losses[0, :, 0]))  # the start farthest from the zero-loss poles
    assert sim.positions is not None  # keep_positions=True
    return {
        "elrs": elrs,
        "regimes": [r["regime"] for r in labels],
        "positions": sim.positions[:, far, :PATH_DENSE_STEPS],
        "pole": np.linalg.svd(toy.A)[2][-1],
    }
