"""The Fisher information of the model's predictive distribution w.r.t. the SI weights, as the
paper measures it: products, trace and top eigenvalues.

F = sum_b (1 / N) sum_{i in b} J_i^T (diag(p_i) - p_i p_i^T) J_i, with J_i the Jacobian of
sample i's logits and p_i = softmax(logits_i): the expected outer product of the log-likelihood
gradient with the labels SAMPLED FROM THE MODEL (exact expectation, not a sample), which for
the softmax equals the generalized Gauss-Newton matrix of the cross-entropy. The true labels
never enter (also under a squared training loss, as in the paper). Each batch's logits are
differentiated through its own BatchNorm statistics (train mode, buffers restored), like the
curvature metrics. Scaling: for SI weights F(a w) = F(w) / a^2, so ``effective_*`` values are
times rho^2.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from spherelab.metrics.curvature import Spectrum, mean_rayleigh_quotient, top_eigenvalues
from spherelab.metrics.geometry import joint_norm
from spherelab.metrics.state import (
    Batches,
    LossFn,
    batch_weights,
    check_batches,
    check_params,
    check_vec,
    make_generator,
    preserved_state,
    random_like,
)


def _grads(outputs: Tensor, params: list[Tensor], weights: Tensor, graph: bool) -> list[Tensor]:
    grads = torch.autograd.grad(
        outputs, params, grad_outputs=weights, create_graph=graph, allow_unused=True
    )
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]


def fisher_vp(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Batches,
    params: Sequence[Tensor],
    vec: Sequence[Tensor],
) -> list[Tensor]:
    """F times ``vec`` (module docstring); ``loss_fn`` supplies the logits. Per batch: J v by
    the double-backward trick, the softmax covariance, then J^T of it."""
    params = check_params(params)
    vec = [v.detach() for v in check_vec(vec, params)]
    batches = check_batches(batches)
    _, n_total = batch_weights(batches)
    out = [torch.zeros_like(p) for p in params]
    with preserved_state(model, train=True), torch.enable_grad():
        for x, y in batches:
            _, logits = loss_fn(model, x, y)
            if logits is None:
                raise ValueError("the Fisher needs class logits; loss_fn returned none")
            dummy = torch.zeros_like(logits, requires_grad=True)
            jt_dummy = _grads(logits, params, dummy, graph=True)  # J^T u, linear in u
            (jv,) = torch.autograd.grad(jt_dummy, dummy, grad_outputs=vec, retain_graph=True)
            probs = torch.softmax(logits.detach(), dim=1)
            cov_jv = probs * jv - probs * (probs * jv).sum(1, keepdim=True)
            torch._foreach_add_(out, _grads(logits, params, cov_jv / n_total, graph=False))
    return out


def fisher_trace(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Batches,
    params: Sequence[Tensor],
    n_probes: int = 5,
    generator: torch.Generator | None = None,
    probes: Sequence[Sequence[Tensor]] | None = None,
) -> dict[str, float]:
    """tr(F) / #params estimated as the paper does: the mean Rayleigh quotient of F over
    standard normal probes (drawn from ``generator``, or the given ``probes``). Returns
    ``trace_per_param``, ``effective_trace_per_param`` (times rho^2), ``radius``, ``n_probes``."""
    params = check_params(params)
    if probes is None:
        if not isinstance(n_probes, int) or n_probes < 1:
            raise ValueError(f"n_probes={n_probes!r} must be an integer >= 1")
        gen = make_generator(generator, params[0].device)
        probes = [random_like(params, gen, "normal") for _ in range(n_probes)]

    def apply(vec: list[Tensor]) -> list[Tensor]:
        return fisher_vp(model, loss_fn, batches, params, vec)

    value = mean_rayleigh_quotient(apply, probes)
    rho = float(joint_norm(params))
    return {
        "trace_per_param": value,
        "effective_trace_per_param": value * rho**2,
        "radius": rho,
        "n_probes": len(probes),
    }


def fisher_topk(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Batches,
    params: Sequence[Tensor],
    k: int = 5,
    iters: int = 20,
    generator: torch.Generator | None = None,
) -> Spectrum:
    """Top-``k`` eigenvalues of F by Lanczos with ``iters`` Fisher-vector products."""
    params = check_params(params)

    def apply(vec: list[Tensor]) -> list[Tensor]:
        return fisher_vp(model, loss_fn, batches, params, vec)

    return top_eigenvalues(apply, params, k, iters, generator)
