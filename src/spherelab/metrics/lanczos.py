"""Lanczos with full reorthogonalisation for the top eigenvalues of a symmetric linear operator.

The operator is given as a function on flat vectors (a Hessian-vector product in practice). No
scipy/gpytorch: the Krylov basis is a (iters, dim) tensor on the operator's device and the
tridiagonal matrix is diagonalised with ``torch.linalg.eigh`` in float64 on the CPU. Memory is
O(iters · dim), the price of full reorthogonalisation (needed: without it, converged eigenvalues
reappear as spurious copies after a few dozen steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor


def _orthogonalize(w: Tensor, basis: Tensor) -> Tensor:
    """Remove from ``w`` its components along the orthonormal rows of ``basis`` (twice is enough)."""
    for _ in range(2):
        w = w - basis.T @ (basis @ w)
    return w


def _restart_vector(basis: Tensor, generator: torch.Generator) -> Tensor | None:
    """A random unit vector orthogonal to ``basis``, or None when the basis spans everything."""
    dim = basis.shape[1]
    if basis.shape[0] >= dim:
        return None
    r = torch.randn(dim, generator=generator, device=generator.device, dtype=basis.dtype)
    r = _orthogonalize(r.to(basis.device), basis)
    return r / torch.linalg.vector_norm(r)


def lanczos(
    matvec: Callable[[Tensor], Tensor],
    dim: int,
    iters: int,
    generator: torch.Generator,
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor:
    """All Ritz values (ascending, float64, CPU) after ``min(iters, dim)`` Lanczos steps.

    On breakdown (the Krylov space became invariant, beta ~ 0) the iteration restarts with a random
    vector orthogonal to the basis and a zero coupling, so the tridiagonal matrix becomes block
    diagonal and repeated eigenvalues are found with their multiplicity. With ``iters >= dim``
    the result is the full spectrum up to rounding. One host sync per step (the breakdown test).
    """
    steps = min(iters, dim)
    basis = torch.zeros(steps, dim, dtype=dtype, device=device)
    q = torch.randn(dim, generator=generator, device=generator.device, dtype=dtype).to(device)
    q = q / torch.linalg.vector_norm(q)
    alphas: list[float] = []
    betas: list[float] = []
    tol = 10.0 * math.sqrt(dim) * torch.finfo(dtype).eps
    for i in range(steps):
        basis[i] = q
        w = matvec(q)
        alphas.append(float(torch.dot(q, w)))
        if i == steps - 1:
            break
        w = _orthogonalize(w, basis[: i + 1])
        beta = float(torch.linalg.vector_norm(w))
        scale = max(max(abs(a) for a in alphas), max(betas, default=0.0))
        if beta > tol * scale:
            q, coupling = w / beta, beta
        else:
            restart = _restart_vector(basis[: i + 1], generator)
            if restart is None:
                break
            q, coupling = restart, 0.0
        betas.append(coupling)
    alpha_t = torch.tensor(alphas, dtype=torch.float64)
    beta_t = torch.tensor(betas[: len(alphas) - 1], dtype=torch.float64)
    tri = torch.diag(alpha_t) + torch.diag(beta_t, 1) + torch.diag(beta_t, -1)
    return torch.linalg.eigvalsh(tri)
