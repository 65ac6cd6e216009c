"""Curvature of the loss w.r.t. the SI weights: Hessian-vector products, Hutchinson trace, Lanczos
top eigenvalues, the Riemannian Hessian on the sphere and the effective sharpness.

The loss is the mean loss over FIXED batches, L = sum_b (n_b / N) L_b, with BatchNorm in train
mode: each L_b is differentiated twice through its own batch statistics (so the Hessian includes
the BN coupling between samples), and the model's buffers are restored after every call.

Scaling (docs/science.md#scale-invariance): for an SI loss H(a w) = H(w) / a^2, so the curvature
at the unit-norm point is rho^2 · H(w) with rho = ||w||; every ``effective_*`` quantity is
multiplied by rho^2 and is directly comparable with the stability line 2 / ELR of (projected)
gradient descent at that ELR (docs/science.md#curvature-and-the-stability-line).

Riemannian Hessian on the sphere S_rho = {w : ||w|| = rho}, with P = I − w w^T / rho^2 the
projection on the tangent space and g = grad L(w): for a tangent v, differentiate the Riemannian
gradient P g along v and project back: Hess_R[v] = P H v − (<g, w> / rho^2) v (the second term is
the Weingarten map of the sphere, whose unit normal is w / rho and whose curvature is 1 / rho).
Extended to all of R^N by acting on P v, it reads P H P v − (<g, w> / rho^2) P v and vanishes on the
normal direction. Along the geodesic c(t) = cos(t) w + sin(t) rho u (unit tangent u, speed rho):
d^2/dt^2 L(c(t)) at t = 0 = rho^2 u^T H u − <g, w> = rho^2 <u, Hess_R u>. For an exactly SI loss
<g, w> = 0 and Hess_R = P H P; note that then H w = −g (not 0), so H itself is not tangent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from spherelab.metrics.geometry import joint_norm
from spherelab.metrics.lanczos import lanczos
from spherelab.metrics.state import (
    Batches,
    LossFn,
    batch_weights,
    check_batches,
    check_params,
    check_vec,
    dot,
    flatten,
    make_generator,
    preserved_state,
    random_like,
    unflatten,
)


@dataclass(frozen=True)
class Spectrum:
    """Top eigenvalues (descending) and the same times rho^2 (the unit-sphere values)."""

    eigenvalues: list[float]
    effective_eigenvalues: list[float]
    radius: float
    iters: int


def _zeros_if_none(grads: Sequence[Tensor | None], params: Sequence[Tensor]) -> list[Tensor]:
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]


def _grad_and_hvp(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Batches,
    params: list[Tensor],
    vec: list[Tensor] | None,
) -> tuple[list[Tensor], list[Tensor] | None]:
    """Gradient of the mean loss and (if ``vec`` is given) its Hessian times ``vec``, one pass."""
    batches = check_batches(batches)
    weights, _ = batch_weights(batches)
    grad = [torch.zeros_like(p) for p in params]
    hv = None if vec is None else [torch.zeros_like(p) for p in params]
    with preserved_state(model, train=True), torch.enable_grad():
        for (x, y), w in zip(batches, weights):
            loss, _ = loss_fn(model, x, y)
            g = _zeros_if_none(
                torch.autograd.grad(loss, params, create_graph=vec is not None, allow_unused=True),
                params,
            )
            torch._foreach_add_(grad, [t.detach() for t in g], alpha=w)
            if hv is not None and vec is not None:
                gv = dot(g, vec)
                if gv.requires_grad:
                    hv_b = torch.autograd.grad(gv, params, allow_unused=True)
                    torch._foreach_add_(hv, _zeros_if_none(hv_b, params), alpha=w)
    return grad, hv


def hvp(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Batches,
    params: Sequence[Tensor],
    vec: Sequence[Tensor],
) -> list[Tensor]:
    """Hessian of the mean loss over the fixed ``batches`` times ``vec`` (double backward per batch)."""
    params = check_params(params)
    vec = [v.detach() for v in check_vec(vec, params)]
    _, hv = _grad_and_hvp(model, loss_fn, batches, params, vec)
    assert hv is not None
    return hv


def _project(vec: Sequence[Tensor], w: Sequence[Tensor], w_sq: Tensor) -> list[Tensor]:
    """P v = v − (<v, w> / ||w||^2) w."""
    return list(torch._foreach_sub(list(vec), torch._foreach_mul(list(w), dot(vec, w) / w_sq)))


def riemannian_hvp(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Batches,
    params: Sequence[Tensor],
    vec: Sequence[Tensor],
) -> list[Tensor]:
    """Riemannian Hessian on the sphere of radius ||w|| times ``vec``: P H P v − (<g,w>/||w||^2) P v.

    See the module docstring for the derivation; one pass over the batches (gradient and HVP).
    """
    params = check_params(params)
    vec = [v.detach() for v in check_vec(vec, params)]
    w = [p.detach() for p in params]
    w_sq = joint_norm(w) ** 2
    pv = _project(vec, w, w_sq)
    grad, hv = _grad_and_hvp(model, loss_fn, batches, params, pv)
    assert hv is not None
    out = _project(hv, w, w_sq)
    torch._foreach_sub_(out, torch._foreach_mul(pv, dot(grad, w) / w_sq))
    return out


def hutchinson_trace(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Batches,
    params: Sequence[Tensor],
    n_probes: int = 16,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Hutchinson estimate of tr(H) with Rademacher probes z: tr(H) ≈ mean_j z_j^T H z_j.

    The same probes are used on every batch (re-drawn from a saved generator state, so memory stays
    O(#params)); each batch costs one forward, one differentiable backward and ``n_probes``
    double backwards. Returns ``trace``, ``stderr`` (std of the per-probe values / sqrt(n_probes),
    NaN for one probe), ``trace_per_param`` (tr / N), ``effective_trace`` and
    ``effective_stderr`` (times rho^2), ``radius``, ``n_params`` and ``n_probes``.
    """
    if not isinstance(n_probes, int) or n_probes < 1:
        raise ValueError(f"n_probes={n_probes!r} must be an integer >= 1")
    params = check_params(params)
    batches = check_batches(batches)
    weights, _ = batch_weights(batches)
    gen = make_generator(generator, params[0].device)
    start = gen.get_state()
    values = torch.zeros(n_probes, dtype=params[0].dtype, device=params[0].device)
    with preserved_state(model, train=True), torch.enable_grad():
        for (x, y), w in zip(batches, weights):
            loss, _ = loss_fn(model, x, y)
            g = torch.autograd.grad(loss, params, create_graph=True)
            gen.set_state(start)
            for j in range(n_probes):
                z = random_like(params, gen, "rademacher")
                hz = torch.autograd.grad(dot(g, z), params, retain_graph=True, allow_unused=True)
                values[j] += w * dot(z, _zeros_if_none(hz, params)).detach()
    n_params = sum(p.numel() for p in params)
    rho = float(joint_norm(params))
    trace = float(values.mean())
    stderr = float(values.std() / n_probes**0.5) if n_probes > 1 else float("nan")
    return {
        "trace": trace,
        "stderr": stderr,
        "trace_per_param": trace / n_params,
        "effective_trace": trace * rho**2,
        "effective_stderr": stderr * rho**2,
        "radius": rho,
        "n_params": n_params,
        "n_probes": n_probes,
    }


Product = Callable[[list[Tensor]], list[Tensor]]  # a symmetric operator on tensors like params


def top_eigenvalues(
    product: Product,
    params: Sequence[Tensor],
    k: int,
    iters: int,
    generator: torch.Generator | None,
) -> Spectrum:
    """Top-``k`` eigenvalues of the symmetric operator ``product`` (vectors shaped like
    ``params``) by Lanczos with ``iters`` products; also times rho^2 (rho = ||params||)."""
    params = check_params(params)
    dim = sum(p.numel() for p in params)
    if not isinstance(k, int) or not 1 <= k <= min(iters, dim):
        raise ValueError(f"k={k!r} must be an integer in [1, min(iters={iters}, #params={dim})]")

    def matvec(flat: Tensor) -> Tensor:
        return flatten(product(unflatten(flat, params)))

    gen = make_generator(generator, params[0].device)
    ritz = lanczos(matvec, dim, iters, gen, params[0].dtype, params[0].device)
    top = ritz.flip(0)[:k]
    rho = float(joint_norm(params))
    return Spectrum(top.tolist(), (top * rho**2).tolist(), rho, min(iters, dim))


def mean_rayleigh_quotient(product: Product, probes: Sequence[Sequence[Tensor]]) -> float:
    """Mean over ``probes`` of v^T M v / v^T v for the operator M = ``product``.

    For isotropic Gaussian probes this estimates tr(M) / #params: the paper's "trace divided by
    the number of parameters" (its probes are standard normal vectors scaled to unit norm).
    """
    if not probes:
        raise ValueError("probes is empty: pass at least one probe vector")
    total = 0.0
    for vec in probes:
        vec = [v.detach() for v in vec]
        total += float(dot(vec, product(vec)) / dot(vec, vec))
    return total / len(probes)


def _topk(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Batches,
    params: Sequence[Tensor],
    k: int,
    iters: int,
    generator: torch.Generator | None,
    riemannian: bool,
) -> Spectrum:
    params = check_params(params)
    product = riemannian_hvp if riemannian else hvp

    def apply(vec: list[Tensor]) -> list[Tensor]:
        return product(model, loss_fn, batches, params, vec)

    return top_eigenvalues(apply, params, k, iters, generator)


def lanczos_topk(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Batches,
    params: Sequence[Tensor],
    k: int = 5,
    iters: int = 30,
    generator: torch.Generator | None = None,
) -> Spectrum:
    """Top-``k`` (largest algebraic) eigenvalues of the Hessian of the mean loss, by Lanczos.

    ``iters`` Hessian-vector products (each a full pass over ``batches``); the extreme eigenvalues
    converge first, so iters ~ 3k-6k is usually enough (iters >= #params gives the exact spectrum).
    """
    return _topk(model, loss_fn, batches, params, k, iters, generator, riemannian=False)


def riemannian_topk(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Batches,
    params: Sequence[Tensor],
    k: int = 5,
    iters: int = 30,
    generator: torch.Generator | None = None,
) -> Spectrum:
    """Top-``k`` eigenvalues of the Riemannian Hessian on the sphere of radius ||w|| (Lanczos)."""
    return _topk(model, loss_fn, batches, params, k, iters, generator, riemannian=True)


def effective_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Batches,
    params: Sequence[Tensor],
    iters: int = 30,
    generator: torch.Generator | None = None,
    hessian: Literal["riemannian", "euclidean"] = "riemannian",
) -> float:
    """Top Hessian eigenvalue times rho^2: the sharpness at the unit-norm point.

    Gradient descent on the unit sphere with step ELR is linearly stable only where this is below
    2 / ELR (the stability line); ``hessian="riemannian"`` (default) uses the Hessian of the loss
    restricted to the sphere, ``"euclidean"`` the plain Hessian (equal up to the radial direction
    for an exactly SI loss at a point where <g, w> = 0).
    """
    if hessian not in ("riemannian", "euclidean"):
        raise ValueError(f"hessian={hessian!r}: use 'riemannian' or 'euclidean'")
    topk = riemannian_topk if hessian == "riemannian" else lanczos_topk
    spectrum = topk(model, loss_fn, batches, params, k=1, iters=iters, generator=generator)
    return spectrum.effective_eigenvalues[0]


def check_hvp(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Batches,
    params: Sequence[Tensor],
    eps: float = 1e-4,
    generator: torch.Generator | None = None,
) -> float:
    """Relative error ||Hv − FD|| / max(||Hv||, ||FD||) of :func:`hvp` along a random unit ``v``.

    FD = (g(w + eps v) − g(w − eps v)) / (2 eps) is a central difference of full gradients. The
    parameters are restored bit for bit. Expect ~1e-8 in float64 and ~1e-2 in float32 (rounding
    of the gradient differences); larger values mean the loss is not twice differentiable here
    or the HVP is wrong.
    """
    if not eps > 0:
        raise ValueError(f"eps={eps!r} must be > 0")
    params = check_params(params)
    gen = make_generator(generator, params[0].device)
    v = random_like(params, gen, "normal")
    torch._foreach_div_(v, joint_norm(v))
    hv = hvp(model, loss_fn, batches, params, v)
    saved = [p.detach().clone() for p in params]
    try:
        grads = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                torch._foreach_add_(params, v, alpha=sign * eps)
            grads.append(_grad_and_hvp(model, loss_fn, batches, params, None)[0])
            with torch.no_grad():
                torch._foreach_copy_(params, saved)
    finally:
        with torch.no_grad():
            torch._foreach_copy_(params, saved)
    fd = torch._foreach_div(torch._foreach_sub(grads[0], grads[1]), 2.0 * eps)
    err = joint_norm(torch._foreach_sub(hv, fd))
    scale = torch.maximum(joint_norm(hv), joint_norm(fd)).clamp_min(torch.finfo(hv[0].dtype).tiny)
    return float(err / scale)
