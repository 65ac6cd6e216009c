"""Theory for the quadratic SI toy (docs/science.md#the-toy-model): the numbers that predict its
three regimes.

Everything here takes the data matrix ``A`` (n x d, rows a_i, float64 numpy) and is pure numpy.
Derivations are in docs/toy.md; each function's docstring carries the short version.

Key identity (used throughout). Write u = w + v with w orthogonal to S = span{a_i} and v in S,
and t = v / |w| (gnomonic coordinates). One SGD step u <- normalize(u - eta g_B) with
g_B = (1/B) sum_b x_b (a_b - x_b u), x_b = a_b . u, never turns w, and maps t exactly to

    t <- (I - eta_eff H_B) t,   H_B = (1/B) sum_b a_b a_b^T,   eta_eff = eta / (1 + eta m_B),

with m_B = (1/B) sum_b x_b^2 = 2 L_B(u). Near the zero-loss set (t -> 0) eta_eff -> eta, so the
linear stability of SGD is that of the random product of (I - eta H_B) on S.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

# Steps of the random matrix product per chain and independent chains: 20k steps give a
# per-chain exponent to ~1/sqrt(20k) ~ 0.007/step; 16 chains bring the threshold error to ~1%.
LYAPUNOV_STEPS = 20_000
LYAPUNOV_CHAINS = 16
# The first 10% of each product is a transient (the vector aligning with the top direction).
BURN_IN_FRACTION = 0.1
# Grid points per bracketing round of the zero crossing (two rounds: coarse, then fine).
GRID_POINTS = 24
# Steps whose batches are drawn and gathered at once (memory: CHUNK_STEPS * K * B * d floats).
CHUNK_STEPS = 1024


def stream(purpose: str, *seeds: int) -> np.random.Generator:
    """A generator for one purpose, independent of the one that drew ``A`` from the same seed.

    The instance draws A with default_rng(seed); reusing that stream for initial points would
    start them on the a_i themselves. Mixing a purpose tag into the entropy separates them.
    """
    tag = int.from_bytes(purpose.encode("ascii")[:8], "little")
    return np.random.default_rng([tag, *seeds])


def span_coordinates(A: np.ndarray) -> np.ndarray:
    """Rows a_i written in an orthonormal basis of S = span{a_i} (n x n): C = R^T, A^T = QR."""
    _, r = np.linalg.qr(A.T)
    return r.T


def batch_indices(
    rng: np.random.Generator, n: int, shape: tuple[int, ...], batch_size: int
) -> np.ndarray:
    """Sample indices (shape + (B,)) with replacement: iid mini-batches of the finite sum."""
    return rng.integers(0, n, size=(*shape, batch_size))


def sampled_rows(
    rng: np.random.Generator, rows: np.ndarray, steps: int, shape: tuple[int, ...], batch_size: int
) -> Iterator[np.ndarray]:
    """Yield, for each of ``steps`` steps, the sampled rows (shape + (B, row length)).

    Indices are drawn CHUNK_STEPS steps at a time: one generator call and one gather per chunk
    instead of per step (the simulations are dominated by per-step Python overhead).
    """
    for start in range(0, steps, CHUNK_STEPS):
        count = min(CHUNK_STEPS, steps - start)
        yield from rows[batch_indices(rng, rows.shape[0], (count, *shape), batch_size)]


def lyapunov_exponents(
    A: np.ndarray,
    etas: np.ndarray,
    batch_size: int = 1,
    steps: int | None = None,
    chains: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Top Lyapunov exponent (per step) of v <- (I - eta H_B) v on S, one per (chain, eta).

    Estimated as (1/T) sum_t log |M_t v_{t-1}| with v renormalised every step (products of
    random matrices grow like exp(lambda t) for almost every start). All etas of one chain share
    the same batches (common random numbers), so lambda_chain(eta) is smooth in eta and its zero
    crossing is well defined; chains are independent. Returns an array (chains, len(etas)).
    steps and chains default to LYAPUNOV_STEPS and LYAPUNOV_CHAINS (read at call time).
    """
    steps = LYAPUNOV_STEPS if steps is None else steps
    chains = LYAPUNOV_CHAINS if chains is None else chains
    c = span_coordinates(A)
    n = c.shape[0]
    etas = np.asarray(etas, dtype=np.float64)
    rng = stream("lyapunov", seed)
    v = rng.standard_normal((chains, 1, n)).repeat(len(etas), axis=1)
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    scale = (etas / batch_size)[None, :, None]
    burn = int(steps * BURN_IN_FRACTION)
    total = np.zeros((chains, len(etas)))
    for step, cb in enumerate(sampled_rows(rng, c, steps, (chains, 1), batch_size)):
        proj = (v[:, :, None, :] * cb).sum(-1)  # (K, E, B); cb is (K, 1, B, n)
        v -= scale * (proj[..., None] * cb).sum(2)
        norm = np.sqrt((v * v).sum(-1, keepdims=True))
        v /= norm
        if step >= burn:
            total += np.log(norm[..., 0])
    return total / (steps - burn)


def lyapunov_threshold(
    A: np.ndarray,
    batch_size: int = 1,
    steps: int | None = None,
    chains: int | None = None,
    seed: int = 0,
) -> tuple[float, float]:
    """Zero crossing eta_1 > 0 of the top Lyapunov exponent, with its standard error.

    lambda(0) = 0, and lambda < 0 while every factor contracts (|1 - eta mu| <= 1 for every
    eigenvalue mu of every H_B, i.e. eta <= 2 / max mu, and the a_i span S). For large eta the
    sum of all exponents, E log|det(I - eta H_B)|, is positive, hence so is the top one. For
    B = 1 this brackets eta_1 in [2 / max|a_i|^2, 2 / min|a_i|^2]. We scan a log grid over
    [0.25, 4] x 2 / E[lambda_max(H_B)] (short products), then a fine grid in the cell where the
    mean exponent changes sign (full-length products, fresh chains). Each chain's crossing is
    found by linear interpolation on the fine grid; the estimate is their mean, the error their
    standard error combined in quadrature with half a fine-grid cell (a conservative bound on
    the interpolation error).
    """
    steps = LYAPUNOV_STEPS if steps is None else steps
    base = 2.0 / _mean_top_batch_curvature(A, batch_size, seed)
    coarse = base * np.geomspace(0.25, 4.0, GRID_POINTS)
    lam = lyapunov_exponents(A, coarse, batch_size, steps // 4, chains, seed).mean(0)
    k = _first_sign_change(lam, coarse)
    fine = np.linspace(coarse[k], coarse[k + 1], GRID_POINTS)
    per_chain = lyapunov_exponents(A, fine, batch_size, steps, chains, seed + 1)
    crossings = np.array([_crossing(row, fine) for row in per_chain])
    crossings = crossings[np.isfinite(crossings)]
    if crossings.size == 0:
        crossings = np.array([_crossing(per_chain.mean(0), fine)])
    err = crossings.std(ddof=1) / np.sqrt(crossings.size) if crossings.size > 1 else 0.0
    half_cell = 0.5 * (fine[1] - fine[0])
    return float(crossings.mean()), float(np.hypot(err, half_cell))


def _mean_top_batch_curvature(
    A: np.ndarray, batch_size: int, seed: int, samples: int = 256
) -> float:
    """E[lambda_max(H_B)] over random batches: the curvature one SGD step sees."""
    rng = stream("curv", seed)
    batches = A[batch_indices(rng, A.shape[0], (samples,), batch_size)]  # (S, B, d)
    gram = batches @ batches.transpose(0, 2, 1) / batch_size  # same nonzero spectrum as H_B
    return float(np.linalg.eigvalsh(gram)[:, -1].mean())


def _first_sign_change(values: np.ndarray, grid: np.ndarray) -> int:
    """Index k of the first cell [k, k+1] where values go from < 0 to >= 0."""
    hits = np.flatnonzero((values[:-1] < 0) & (values[1:] >= 0))
    if hits.size == 0:
        raise ValueError(
            f"no zero crossing of the Lyapunov exponent on eta in [{grid[0]:.3g}, "
            f"{grid[-1]:.3g}] (exponents {values.min():.3g}..{values.max():.3g}); "
            "increase `steps` or check that n < d and the rows of A are nonzero"
        )
    return int(hits[0])


def _crossing(values: np.ndarray, grid: np.ndarray) -> float:
    """Linear interpolation of the first upward zero crossing; nan if there is none."""
    hits = np.flatnonzero((values[:-1] < 0) & (values[1:] >= 0))
    if hits.size == 0:
        return float("nan")
    k = hits[0]
    frac = -values[k] / (values[k + 1] - values[k])
    return float(grid[k] + frac * (grid[k + 1] - grid[k]))


def large_elr_limit_loss(
    A: np.ndarray, batch_size: int = 1, steps: int = 4_000, chains: int = 64, seed: int = 0
) -> float:
    """Stationary full loss of the eta -> infinity map u <- normalize(-g_B(u)).

    As eta -> infinity, u - eta g_B is dominated by -eta g_B, so the step jumps to the unit
    vector along minus the mini-batch gradient: for B = 1, -sign(x_i)(a_i - x_i u) normalised,
    the direction in span{u, a_i} that maximises f_i. This map never depends on eta; we iterate
    it for many chains from uniform starts and average L(u) over the last half of the steps.
    """
    rng = stream("limit", seed)
    u = rng.standard_normal((chains, A.shape[1]))
    u /= np.linalg.norm(u, axis=-1, keepdims=True)
    acc, count = 0.0, 0
    for step, ab in enumerate(sampled_rows(rng, A, steps, (chains,), batch_size)):
        g = rows_grad(ab, u)
        u = -g / np.linalg.norm(g, axis=-1, keepdims=True)
        if step >= steps // 2:
            acc += float(full_loss(A, u).sum())
            count += chains
    return acc / count


def sphere_grad(A: np.ndarray, u: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Riemannian gradient of L_B(u) = (1/B) sum_b 1/2 (a_b . u)^2 at unit u.

    idx has shape (..., B) and broadcasts against u's leading dims (u: (..., d)). The Euclidean
    gradient is (1/B) sum_b x_b a_b; removing its radial part (u . that = mean x_b^2) leaves
    (1/B) sum_b x_b (a_b - x_b u).
    """
    return rows_grad(A[idx], u)


def rows_grad(ab: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``sphere_grad`` given the batch rows themselves, ab: (..., B, d)."""
    x = (u[..., None, :] * ab).sum(-1)  # (..., B)
    return (x[..., None] * ab).mean(-2) - (x * x).mean(-1)[..., None] * u


def full_loss(A: np.ndarray, u: np.ndarray) -> np.ndarray:
    """L(u) = mean_i 1/2 (a_i . u)^2, batched over the leading dims of u."""
    return 0.5 * np.mean((u @ A.T) ** 2, axis=-1)


def uniform_loss(A: np.ndarray) -> float:
    """E_u L(u) for u uniform on S^(d-1): E[u u^T] = I/d, so mean_i |a_i|^2 / (2d)."""
    return float(np.mean(np.sum(A**2, axis=1)) / (2 * A.shape[1]))


def gd_threshold(A: np.ndarray) -> float:
    """2 / lambda_max of the Riemannian Hessian of L at the zero-loss set (full-batch GD).

    L(u) = 1/2 u^T H u with H = A^T A / n; at a zero u*, H u* = 0, so the Riemannian Hessian
    P (H - (u*^T H u*) I) P equals H on the tangent space, and lambda_max(H) = s_max(A)^2 / n.
    """
    top = np.linalg.svd(A, compute_uv=False)[0]
    return float(2.0 * A.shape[0] / top**2)
