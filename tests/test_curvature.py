"""Tests of spherelab.metrics.curvature: HVP, Hutchinson, Lanczos and the Riemannian Hessian."""

import math

import pytest
import torch
from _metrics_nets import (
    bn_convnet,
    bn_mlp,
    cross_entropy,
    full_gradient,
    full_hessian,
    make_batches,
    mean_loss_of_flat,
    plain_mlp,
    scale_,
    trainable,
)
from torch import nn

from spherelab.metrics.curvature import (
    check_hvp,
    effective_sharpness,
    hutchinson_trace,
    hvp,
    lanczos_topk,
    riemannian_hvp,
    riemannian_topk,
)
from spherelab.metrics.geometry import joint_norm
from spherelab.metrics.lanczos import lanczos
from spherelab.metrics.state import flatten, unflatten


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _riemannian_matrix(model, batches, params) -> torch.Tensor:
    """Dense P H P − (<g, w>/||w||^2) P, built from the dense Hessian and gradient."""
    w = flatten([p.detach() for p in params])
    proj = torch.eye(w.numel(), dtype=w.dtype) - torch.outer(w, w) / (w @ w)
    hess = full_hessian(model, batches, params)
    g = full_gradient(model, batches, params)
    return proj @ hess @ proj - (g @ w) / (w @ w) * proj


@pytest.mark.parametrize("build, shape", [(bn_mlp, (5,)), (bn_convnet, (1, 5, 5))])
def test_hvp_matches_the_full_hessian_of_a_bn_network_in_train_mode(build, shape):
    model = build().eval()  # hvp must switch BN to batch statistics itself
    params = trainable(model)
    batches = make_batches((8, 8, 5), shape=shape, classes=2)
    v = [torch.randn(p.shape, generator=_gen(), dtype=p.dtype) for p in params]
    expected = full_hessian(model, batches, params) @ flatten(v)
    assert torch.allclose(
        flatten(hvp(model, cross_entropy, batches, params, v)), expected, atol=1e-10
    )


def test_hvp_leaves_running_stats_and_eval_mode_unchanged():
    model = bn_mlp().eval()
    params = trainable(model)
    buffers = [b.clone() for b in model.buffers()]
    hvp(model, cross_entropy, make_batches(), params, [torch.ones_like(p) for p in params])
    assert not any(m.training for m in model.modules())
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers()))


def test_hessian_times_weights_is_minus_the_gradient_for_an_si_loss():
    # Euler's theorem: grad L is homogeneous of degree -1, so H w = -g (H w = 0 only at critical points).
    model = bn_mlp(eps=1e-14)
    params, batches = trainable(model), make_batches()
    hw = flatten(hvp(model, cross_entropy, batches, params, [p.detach() for p in params]))
    g = full_gradient(model, batches, params)
    assert torch.allclose(hw, -g, atol=1e-8 * g.norm().item())


class _DiagonalLoss(nn.Module):
    """L = mean_b sum_i x_bi w_i^2 + sum_i w_i^4: a loss whose Hessian is diagonal."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(7, generator=_gen(3), dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.w**2).sum(1) + (self.w**4).sum()


def _diagonal_loss(model, x, y):
    return model(x).mean(), None


def test_hutchinson_is_exact_on_a_diagonal_hessian():
    model = _DiagonalLoss()
    batches = make_batches((4, 3), shape=(7,))
    hess = torch.autograd.functional.hessian(
        lambda w: sum(
            x.shape[0] / 7 * ((x * w**2).sum(1) + (w**4).sum()).mean() for x, _ in batches
        ),
        model.w.detach(),
    )
    assert torch.count_nonzero(hess - torch.diag(torch.diag(hess))) == 0
    result = hutchinson_trace(
        model, _diagonal_loss, batches, [model.w], n_probes=4, generator=_gen()
    )
    assert result["trace"] == pytest.approx(torch.trace(hess).item(), rel=1e-12)
    assert result["stderr"] == pytest.approx(0.0, abs=1e-12)
    assert result["trace_per_param"] == pytest.approx(result["trace"] / 7, rel=1e-12)


def test_hutchinson_uses_the_same_probe_on_every_batch():
    # With one probe the estimate must be z^T H z for one sign vector z of the 2^6 possible ones;
    # a fresh probe per batch would give a mixture of per-batch quadratic forms instead.
    model = plain_mlp(d_in=1)
    params, batches = trainable(model), make_batches(shape=(1,))
    hess = full_hessian(model, batches, params)
    signs = torch.cartesian_prod(*[torch.tensor([-1.0, 1.0], dtype=torch.float64)] * 6)
    forms = torch.einsum("si,ij,sj->s", signs, hess, signs)
    estimate = hutchinson_trace(model, cross_entropy, batches, params, n_probes=1, generator=_gen())
    assert (forms - estimate["trace"]).abs().min().item() < 1e-10 * hess.abs().max().item()


def test_hutchinson_agrees_with_the_full_hessian_trace_within_its_standard_error():
    model = bn_mlp()
    params, batches = trainable(model), make_batches()
    exact = torch.trace(full_hessian(model, batches, params)).item()
    result = hutchinson_trace(model, cross_entropy, batches, params, n_probes=32, generator=_gen())
    assert abs(result["trace"] - exact) < 4 * result["stderr"]
    assert result["effective_trace"] == pytest.approx(result["trace"] * result["radius"] ** 2)


def test_lanczos_top_eigenvalues_match_eigvalsh_of_the_full_hessian():
    model = bn_mlp()
    params, batches = trainable(model), make_batches()
    exact = torch.linalg.eigvalsh(full_hessian(model, batches, params)).flip(0)[:4]
    spectrum = lanczos_topk(model, cross_entropy, batches, params, k=4, iters=40, generator=_gen())
    assert torch.allclose(torch.tensor(spectrum.eigenvalues, dtype=torch.float64), exact, rtol=1e-6)
    rho2 = joint_norm(params).item() ** 2
    assert spectrum.effective_eigenvalues[0] == pytest.approx(spectrum.eigenvalues[0] * rho2)


def test_lanczos_recovers_repeated_eigenvalues_after_breakdown():
    eigenvalues = torch.tensor([5.0, 5.0, 5.0, 2.0, 2.0, -1.0, 0.0, 0.0], dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=_gen(), dtype=torch.float64))
    matrix = q @ torch.diag(eigenvalues) @ q.T
    ritz = lanczos(lambda v: matrix @ v, 8, 8, _gen(1), torch.float64, torch.device("cpu"))
    assert torch.allclose(ritz, eigenvalues.sort().values, atol=1e-10)


def _geodesic_second_derivative(model, batches, params, u, h: float = 1e-4) -> float:
    """Central second difference of t -> L(cos t · w + sin t · rho · u) at t = 0."""
    w = flatten([p.detach() for p in params])
    loss = mean_loss_of_flat(model, batches, params)
    values = [loss(math.cos(t) * w + math.sin(t) * w.norm() * u).item() for t in (-h, 0.0, h)]
    return (values[0] - 2 * values[1] + values[2]) / h**2


@pytest.mark.parametrize("build", [plain_mlp, lambda: bn_mlp(act=nn.Tanh)])
def test_riemannian_hessian_is_the_second_derivative_along_geodesics(build):
    model = build()
    params, batches = trainable(model), make_batches()
    w = flatten([p.detach() for p in params])
    r = torch.randn(w.numel(), generator=_gen(), dtype=w.dtype)
    u = r - (r @ w) / (w @ w) * w
    u = u / u.norm()
    hess_u = flatten(riemannian_hvp(model, cross_entropy, batches, params, unflatten(u, params)))
    expected = _geodesic_second_derivative(model, batches, params, u) / (w @ w).item()
    assert (u @ hess_u).item() == pytest.approx(expected, rel=1e-5)


def test_riemannian_hessian_vanishes_on_the_radial_direction():
    model = plain_mlp()
    params = trainable(model)
    out = riemannian_hvp(model, cross_entropy, make_batches(), params, [p.detach() for p in params])
    assert joint_norm(out).item() < 1e-12 * joint_norm(params).item()


def test_riemannian_topk_and_effective_sharpness_match_the_dense_riemannian_hessian():
    model = plain_mlp()
    params, batches = trainable(model), make_batches()
    exact = torch.linalg.eigvalsh(_riemannian_matrix(model, batches, params)).flip(0)[:3]
    spectrum = riemannian_topk(
        model, cross_entropy, batches, params, k=3, iters=30, generator=_gen()
    )
    assert torch.allclose(torch.tensor(spectrum.eigenvalues, dtype=torch.float64), exact, rtol=1e-6)
    sharpness = effective_sharpness(
        model, cross_entropy, batches, params, iters=30, generator=_gen()
    )
    assert sharpness == pytest.approx(exact[0].item() * joint_norm(params).item() ** 2, rel=1e-6)


def test_effective_curvature_is_invariant_to_rescaling_the_si_weights():
    model = bn_mlp(eps=1e-14)
    params, batches = trainable(model), make_batches()
    before = hutchinson_trace(model, cross_entropy, batches, params, n_probes=3, generator=_gen())
    scale_(params, 2.0)
    after = hutchinson_trace(model, cross_entropy, batches, params, n_probes=3, generator=_gen())
    assert after["trace"] == pytest.approx(before["trace"] / 4.0, rel=1e-8)
    assert after["effective_trace"] == pytest.approx(before["effective_trace"], rel=1e-8)


def test_check_hvp_reports_a_small_error_in_float64_and_restores_the_weights():
    model = bn_mlp(act=nn.Tanh)
    params = trainable(model)
    saved = [p.detach().clone() for p in params]
    error = check_hvp(model, cross_entropy, make_batches(), params, eps=1e-5, generator=_gen())
    assert error < 1e-7
    assert all(torch.equal(a, b) for a, b in zip(saved, params))


def test_lanczos_topk_rejects_k_larger_than_iters():
    model = bn_mlp()
    with pytest.raises(ValueError, match="k=9"):
        lanczos_topk(model, cross_entropy, make_batches(), trainable(model), k=9, iters=5)
