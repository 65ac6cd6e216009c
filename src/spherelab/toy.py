"""The quadratic SI toy model of PAPER.md §5: instance, vectorised SGD-on-the-sphere simulation.

f_i(u) = 1/2 (a_i . u)^2 on the unit sphere S^(d-1), a_i iid N(0, I_d), n < d. Arrays are
float64 numpy (``A`` is n x d); the theory numbers live in ``spherelab.toy_theory``, the
figure and HTML page in ``spherelab.toy_plots``. ``run_toy`` is the end-to-end experiment:
theory, an ELR sweep labelled by ``spherelab.regimes.classify``, bisection of the boundaries.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spherelab import toy_theory
from spherelab.regimes import Boundary, classify, estimate_boundaries, refine_points

log = logging.getLogger("spherelab")

# Default sweep: 17 ELRs, 4 per decade, from 0.1x to 1000x the step 2 / mean|a_i|^2 at which a
# single SGD step reflects the sampled component (eta_1 sits just below it), SGD steps per run,
# initial points per ELR, and bisection rounds (each halves the log-width of every bracket:
# 4 rounds take the 1.78x grid ratio to 1.04x, well inside the 10% the theory is tested to).
DEFAULT_GRID = np.geomspace(0.1, 1000.0, 17)
DEFAULT_STEPS = 20_000
DEFAULT_INITS = 8
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

# Records per decade of steps on the default log-spaced schedule: ~10 points in the last decade
# give the regime classifier a trend and two halves to compare.
RECORDS_PER_DECADE = 12


def log_schedule(last: int, per_decade: int = RECORDS_PER_DECADE) -> np.ndarray:
    """0 plus unique integer steps log-spaced from 1 to ``last`` (both included)."""
    if last < 1:
        raise ValueError(f"last={last}: the schedule needs at least one step (last >= 1)")
    count = max(2, int(np.ceil(np.log10(last) * per_decade)) + 1)
    steps = np.unique(np.round(np.geomspace(1, last, count)).astype(np.int64))
    return np.concatenate([[0], steps])


@dataclass(frozen=True)
class ToySimulation:
    """Loss trajectories of ``simulate``: losses[e, k, r] = L(u) of ELR e, init k, at steps[r].

    ``positions`` (E, K, R, d) holds the points themselves when asked for (keep_positions).
    """

    elrs: np.ndarray
    steps: np.ndarray
    losses: np.ndarray
    positions: np.ndarray | None = None


class QuadraticSphereToy:
    """One toy instance: ``A`` (n x d, float64 numpy) drawn from ``seed``; SGD with ``batch_size``.

    The rows are drawn with ``np.random.default_rng(seed).standard_normal((n, d))``.
    """

    def __init__(self, d: int, n: int, seed: int = 0, batch_size: int = 1) -> None:
        if not 1 <= n < d:
            raise ValueError(
                f"d={d}, n={n}: the toy needs 1 <= n < d so that zero loss is "
                "reachable on the sphere; pick n smaller than d"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: use a positive batch size")
        self.d, self.n, self.seed, self.batch_size = d, n, seed, batch_size
        self.A = np.random.default_rng(seed).standard_normal((n, d))

    def loss(self, u: np.ndarray) -> np.ndarray:
        """Full loss L(u) = mean_i 1/2 (a_i . u)^2, batched over the leading dims of u."""
        return toy_theory.full_loss(self.A, np.asarray(u, dtype=np.float64))

    def riemannian_grad(self, u: np.ndarray, idx: int | np.ndarray) -> np.ndarray:
        """Sphere gradient of the mini-batch loss over rows ``idx`` (int, or (..., B) indices)."""
        idx = np.asarray(idx)
        return toy_theory.sphere_grad(
            self.A, np.asarray(u, dtype=np.float64), idx[..., None] if idx.ndim == 0 else idx
        )

    def simulate(
        self,
        elrs: Sequence[float],
        steps: int,
        n_inits: int = DEFAULT_INITS,
        seed: int = 0,
        schedule: Sequence[int] | None = None,
        keep_positions: bool = False,
    ) -> ToySimulation:
        """SGD on the sphere, u <- normalize(u - eta g_B(u)), for all ELRs and inits at once.

        One (E, K, d) array is stepped; there is no loop over ELRs. Every ELR starts from the
        same K uniform initial points and sees the same batches (common random numbers), so a
        given (elr, init) trajectory does not depend on which other ELRs are in the call, and
        the whole result is bitwise reproducible for a fixed ``seed``. L(u) is recorded at the
        steps of ``schedule`` (default: log-spaced, 0 = init, up to ``steps``).
        """
        etas = np.asarray(elrs, dtype=np.float64)
        if etas.ndim != 1 or etas.size == 0 or not np.all(etas > 0):
            raise ValueError(
                f"elrs={list(np.atleast_1d(etas))}: pass a non-empty list of "
                "positive effective learning rates"
            )
        record = log_schedule(steps) if schedule is None else np.asarray(schedule, np.int64)
        if record.min() < 0 or record.max() > steps:
            raise ValueError(
                f"schedule spans {record.min()}..{record.max()}: keep it in 0..steps={steps}"
            )
        rng = toy_theory.stream("simulate", self.seed, seed)
        u0 = rng.standard_normal((n_inits, self.d))
        u = np.broadcast_to(
            u0 / np.linalg.norm(u0, axis=-1, keepdims=True), (etas.size, n_inits, self.d)
        ).copy()
        losses = np.empty((etas.size, n_inits, record.size))
        kept = np.empty((etas.size, n_inits, record.size, self.d)) if keep_positions else None
        r = _record(u, 0, record, 0, self.A, losses, kept)
        rows = toy_theory.sampled_rows(rng, self.A, steps, (n_inits,), self.batch_size)
        for step, ab in enumerate(rows, start=1):
            u -= etas[:, None, None] * toy_theory.rows_grad(ab, u)
            u /= np.sqrt((u * u).sum(-1, keepdims=True))
            r = _record(u, step, record, r, self.A, losses, kept)
        return ToySimulation(etas, record, losses, kept)

    def lyapunov_exponent(
        self,
        etas: Sequence[float],
        steps: int | None = None,
        chains: int | None = None,
        seed: int = 0,
    ) -> np.ndarray:
        """Top Lyapunov exponent per step of the linearised SGD at each eta (mean over chains)."""
        return toy_theory.lyapunov_exponents(
            self.A, np.asarray(etas, np.float64), self.batch_size, steps, chains, seed
        ).mean(0)

    def lyapunov_threshold(
        self, steps: int | None = None, chains: int | None = None, seed: int = 0
    ) -> tuple[float, float]:
        """Predicted convergence boundary eta_1 and its error (see toy_theory)."""
        return toy_theory.lyapunov_threshold(self.A, self.batch_size, steps, chains, seed)

    def large_elr_limit_loss(self, steps: int = 4_000, chains: int = 64, seed: int = 0) -> float:
        """Stationary loss of the eta -> infinity map (see toy_theory)."""
        return toy_theory.large_elr_limit_loss(self.A, self.batch_size, steps, chains, seed)

    def uniform_loss(self) -> float:
        """Mean loss of a uniformly random direction: mean_i |a_i|^2 / (2d)."""
        return toy_theory.uniform_loss(self.A)

    def reflection_elr(self) -> float:
        """2 / mean_i |a_i|^2: the step that reflects the sampled component of an average row.

        The natural ELR unit of the instance (eta_1 lies a little below it for batch size 1);
        default sweeps are placed in multiples of it, without using the prediction.
        """
        return float(2.0 / np.mean(np.sum(self.A**2, axis=1)))

    def gd_threshold(self) -> float:
        """Full-batch GD stability limit 2 / lambda_max(Hessian) at the zero-loss set."""
        return toy_theory.gd_threshold(self.A)


def _record(
    u: np.ndarray,
    step: int,
    schedule: np.ndarray,
    r: int,
    A: np.ndarray,
    losses: np.ndarray,
    kept: np.ndarray | None,
) -> int:
    """Store L(u) (and u) at slot r if the schedule asks for this step; returns the next slot."""
    while r < schedule.size and schedule[r] == step:
        losses[:, :, r] = toy_theory.full_loss(A, u)
        if kept is not None:
            kept[:, :, r] = u
        r += 1
    return r


def label_simulation(sim: ToySimulation, init_loss: float) -> list[dict[str, object]]:
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
    elrs: Sequence[float],
    steps: int,
    n_inits: int = DEFAULT_INITS,
    rounds: int = REFINE_ROUNDS,
) -> tuple[list[dict[str, object]], list[Boundary]]:
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


def _boundaries(results: Sequence[dict[str, object]]) -> list[Boundary]:
    return estimate_boundaries([r["elr"] for r in results], [r["regime"] for r in results])


def run_toy(
    d: int = 20,
    n: int = 10,
    seed: int = 0,
    out: str | Path = "toy_out",
    elrs: Sequence[float] | None = None,
    steps: int | None = None,
) -> dict:
    """Theory + measured regimes of one toy instance; writes toy.json, toy.png/svg, toy.html.

    Default ELRs: DEFAULT_GRID times ``reflection_elr()``; default steps: DEFAULT_STEPS.
    """
    from spherelab import toy_plots  # matplotlib only when a figure is wanted

    start = time.perf_counter()
    toy = QuadraticSphereToy(d, n, seed)
    steps = DEFAULT_STEPS if steps is None else int(steps)
    if elrs is None:
        elrs = DEFAULT_GRID * toy.reflection_elr()
    eta1, eta1_err = toy.lyapunov_threshold()
    summary: dict[str, object] = {
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
    (out / "toy.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def sphere_paths(seed: int = 0, steps: int | None = None, n_inits: int = 4) -> dict[str, object]:
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
    return {
        "elrs": elrs,
        "regimes": [r["regime"] for r in labels],
        "positions": sim.positions[:, far, :PATH_DENSE_STEPS],
        "pole": np.linalg.svd(toy.A)[2][-1],
    }
