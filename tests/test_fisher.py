"""The Fisher of the model's predictive distribution (spherelab.metrics.fisher) in float64."""

from __future__ import annotations

import copy

import pytest
import torch
from _metrics_nets import bn_mlp, cross_entropy, make_batches, scale_, trainable
from torch import Tensor, nn
from torch.func import functional_call

from spherelab.metrics import fisher_topk, fisher_trace, fisher_vp, mean_rayleigh_quotient
from spherelab.metrics.state import flatten, unflatten


def dense_fisher(model: nn.Module, batches, params: list[Tensor]) -> Tensor:
    """sum_i J_i^T (diag p_i - p_i p_i^T) J_i / N from full Jacobians (train-mode BN)."""
    names = {id(p): n for n, p in model.named_parameters()}
    keys = [names[id(p)] for p in params]
    model = copy.deepcopy(model).train()
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    total = sum(x.shape[0] for x, _ in batches)
    out = torch.zeros(flat.numel(), flat.numel(), dtype=flat.dtype)
    for x, _ in batches:

        def logits(f: Tensor, x: Tensor = x) -> Tensor:
            chunks = torch.split(f, [p.numel() for p in params])
            override = {k: c.view_as(p) for k, c, p in zip(keys, chunks, params)}
            return functional_call(model, override, (x,))

        jac = torch.autograd.functional.jacobian(logits, flat)  # (B, C, P)
        probs = torch.softmax(logits(flat), dim=1)
        cov = torch.diag_embed(probs) - probs[:, :, None] * probs[:, None, :]
        out += torch.einsum("bcp,bcd,bdq->pq", jac, cov, jac) / total
    return out


@pytest.fixture
def setup():
    model, batches = bn_mlp(), make_batches()
    return model, batches, trainable(model)


def test_fisher_vector_product_equals_the_dense_fisher_of_a_bn_network(setup):
    model, batches, params = setup
    dense = dense_fisher(model, batches, params)
    v = torch.randn(dense.shape[0], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fv = flatten(fisher_vp(model, cross_entropy, batches, params, unflatten(v, params)))
    assert torch.allclose(fv, dense @ v, rtol=1e-10, atol=1e-12)


def test_fisher_is_positive_semidefinite_and_ignores_the_labels(setup):
    model, batches, params = setup
    relabelled = [(x, (y + 1) % 3) for x, y in batches]
    v = [torch.randn_like(p) for p in params]
    a = fisher_vp(model, cross_entropy, batches, params, v)
    b = fisher_vp(model, cross_entropy, relabelled, params, v)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert float(sum((x * y).sum() for x, y in zip(a, v))) >= 0


def test_fisher_trace_per_param_is_the_mean_rayleigh_quotient_of_its_probes(setup):
    model, batches, params = setup
    dense = dense_fisher(model, batches, params)
    probes = [torch.eye(dense.shape[0], dtype=torch.float64)[i] for i in range(dense.shape[0])]
    shaped = [unflatten(e, params) for e in probes]
    exact = fisher_trace(model, cross_entropy, batches, params, probes=shaped)
    assert exact["trace_per_param"] == pytest.approx(float(dense.trace()) / len(probes), rel=1e-10)
    rq = mean_rayleigh_quotient(lambda v: [2 * t for t in v], [[torch.ones(3)], [torch.ones(2)]])
    assert rq == pytest.approx(2.0)


def test_fisher_topk_matches_eigvalsh_of_the_dense_fisher(setup):
    model, batches, params = setup
    dense = dense_fisher(model, batches, params)
    expected = torch.linalg.eigvalsh(dense).flip(0)[:3]
    top = fisher_topk(model, cross_entropy, batches, params, k=3, iters=dense.shape[0])
    got = torch.tensor(top.eigenvalues, dtype=torch.float64)
    assert torch.allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_effective_fisher_values_are_invariant_to_rescaling_the_si_weights():
    model = bn_mlp(eps=1e-14)  # exactly SI up to this eps
    batches, params = make_batches(), trainable(model)
    gen = torch.Generator()
    top = fisher_topk(model, cross_entropy, batches, params, 2, 10, gen.manual_seed(0))
    scale_(params, 2.0)
    scaled = fisher_topk(model, cross_entropy, batches, params, 2, 10, gen.manual_seed(0))
    assert scaled.eigenvalues == pytest.approx([v / 4 for v in top.eigenvalues], rel=1e-8)
    assert scaled.effective_eigenvalues == pytest.approx(top.effective_eigenvalues, rel=1e-8)


def test_fisher_leaves_the_running_statistics_untouched(setup):
    model, batches, params = setup
    before = [b.clone() for b in model.buffers()]
    fisher_trace(model, cross_entropy, batches, params, n_probes=2)
    assert all(torch.equal(a, b) for a, b in zip(before, model.buffers()))
