"""The quadratic SI toy instance (docs/science.md#the-toy-model, docs/toy.md) and its vectorised
SGD-on-the-sphere simulation.

f_i(u) = 1/2 (a_i . u)^2 on the unit sphere S^(d-1), a_i iid N(0, I_d), n < d. Arrays are
float64 numpy (``A`` is n x d); the theory numbers live in ``spherelab.toy.theory``. The
experiment around it (ELR sweep, labels, boundaries, outputs) is ``spherelab.toy.run``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from spherelab.toy import theory as toy_theory

# Initial points per ELR (common random numbers: every ELR starts from the same ones).
DEFAULT_INITS = 8

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
        elrs: Sequence[float] | np.ndarray,
        steps: int,
        n_inits: int = DEFAULT_INITS,
        seed: int = 0,
        schedule: Sequence[int] | np.ndarray | None = None,
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
        etas: Sequence[float] | np.ndarray,
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
