"""The chaos meter (spherelab.chaos) applied to the toy: the same generic tangent-map code, on a
torch version of the toy's loss, checked against the toy's own theory (docs/chaos.md).

The toy's rows are written in an orthonormal basis of S = span{a_i} padded with zeros
(``span_coordinates``), which rotates the instance without changing any exponent; the
zero-loss point is then the last unit vector exactly, so a_b . u = 0 holds in floating point,
the base point stays fixed, and the tangent map there is I - eta H_B on S and the identity on
S's complement. The theory's exponent is that of S, so the probes start in S (an invariant
subspace at the zero-loss point); started anywhere else, the neutral directions along the
zero-loss set would cap the measured exponent at 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from spherelab.chaos import Estimate, Trace, estimate, tangent_trace
from spherelab.sphere import SphereSGD
from spherelab.toy import theory as toy_theory
from spherelab.toy.model import QuadraticSphereToy


def measured_lyapunov(
    toy: QuadraticSphereToy,
    eta: float,
    steps: int,
    *,
    burn_in: int = 100,
    windows: int = 8,
    seed: int = 0,
    batches: Iterable[Tensor] | None = None,
) -> Estimate:
    """λ(eta) of the toy's SGD at its zero-loss point, measured by spherelab.chaos.tangent_trace
    (float64) along one sampled batch sequence (or the given index batches); probes start in
    S."""
    c = torch.from_numpy(toy_theory.span_coordinates(toy.A))
    n, d = c.shape[0], toy.d
    rows = torch.zeros(n, d, dtype=torch.float64)
    rows[:, :n] = c
    u = torch.zeros(d, dtype=torch.float64)
    u[-1] = 1.0
    u.requires_grad_(True)
    opt = SphereSGD([u], elr=eta)

    def loss_of(idx: Tensor) -> Tensor:
        x = rows[idx] @ u
        return 0.5 * (x * x).mean() / (u * u).sum()

    start = torch.zeros(d, dtype=torch.float64)
    start[:n] = torch.from_numpy(toy_theory.stream("chaos-probe", seed).standard_normal(n))
    trace = tangent_trace(
        loss_of,
        [u],
        opt,
        _batches(n, toy.batch_size, seed) if batches is None else batches,
        burn_in + steps,
        start=[[start]],
    )
    return estimate(Trace(trace.log_growth[:, burn_in:], trace.step_angles[burn_in:]), windows)


def _batches(n: int, batch_size: int, seed: int) -> Iterator[Tensor]:
    rng = toy_theory.stream("chaos-batches", seed)
    while True:
        for idx in toy_theory.batch_indices(rng, n, (1024,), batch_size):
            yield torch.from_numpy(idx)


def measured_threshold(
    toy: QuadraticSphereToy, lo: float, hi: float, steps: int, rounds: int = 8, seed: int = 0
) -> float:
    """Bisection of the sign of the measured λ on [lo, hi] (λ(lo) < 0 <= λ(hi) assumed; all
    evaluations share one batch sequence, so λ(eta) is smooth); returns the geometric mid."""
    for _ in range(rounds):
        mid = float(np.sqrt(lo * hi))
        if measured_lyapunov(toy, mid, steps, seed=seed).lyapunov < 0:
            lo = mid
        else:
            hi = mid
    return float(np.sqrt(lo * hi))


def theory_lyapunov(toy: QuadraticSphereToy, etas: Sequence[float], steps: int) -> np.ndarray:
    """The toy's own theory (spherelab.toy.theory.lyapunov_exponents), mean over its chains."""
    return toy.lyapunov_exponent(etas, steps=steps)
