"""Tests of spherelab.metrics.gradients: the streamed gradient statistics equal their definitions."""

import math

import pytest
import torch
from _metrics_nets import bn_convnet, bn_mlp, cross_entropy, make_batches, scale_, trainable

from spherelab.metrics.geometry import joint_norm
from spherelab.metrics.gradients import gradient_stats


def _naive_stats(model, batches, params):
    """Per-batch gradients stacked in memory, then the module docstring's definitions verbatim."""
    sizes = torch.tensor([float(x.shape[0]) for x, _ in batches], dtype=torch.float64)
    p = sizes / sizes.sum()
    grads, losses, correct = [], [], 0
    model.train()
    for x, y in batches:
        loss, logits = cross_entropy(model, x, y)
        grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
        losses.append(loss.item())
        correct += (logits.argmax(1) == y).sum().item()
    g = torch.stack(grads)
    mean = (p[:, None] * g).sum(0)
    return {
        "loss": (p * torch.tensor(losses, dtype=torch.float64)).sum().item(),
        "accuracy": correct / sizes.sum().item(),
        "grad_norm": (p * g.norm(dim=1)).sum().item(),
        "full_grad_norm": mean.norm().item(),
        "grad_variance": (p * ((g - mean) ** 2).sum(1)).sum().item(),
    }


@pytest.mark.parametrize("build, shape", [(bn_mlp, (5,)), (bn_convnet, (1, 5, 5))])
def test_gradient_stats_equal_a_naive_per_batch_computation(build, shape):
    model = build()
    params = trainable(model)
    batches = make_batches((8, 8, 5), shape=shape, classes=2)
    stats = gradient_stats(model, cross_entropy, batches, params)
    naive = _naive_stats(model, batches, params)
    for key, value in naive.items():
        assert getattr(stats, key) == pytest.approx(value, rel=1e-10), key
    assert stats.snr == pytest.approx(
        naive["full_grad_norm"] ** 2 / naive["grad_variance"], rel=1e-9
    )
    rho = joint_norm(params).item()
    assert stats.eff_grad_norm == pytest.approx(naive["grad_norm"] * rho, rel=1e-10)
    assert (stats.n_batches, stats.n_samples) == (3, 21)


def test_gradient_is_tangent_to_the_sphere_for_an_si_network():
    model = bn_mlp(eps=1e-14)
    params = trainable(model)
    x, y = make_batches((16,))[0]
    loss, _ = cross_entropy(model.train(), x, y)
    grads = torch.autograd.grad(loss, params)
    for g, w in zip(grads, params):
        assert abs((g * w).sum().item()) < 1e-9 * g.norm().item() * w.norm().item()


def test_effective_gradient_norm_is_invariant_to_rescaling_the_weights():
    model = bn_mlp(eps=1e-14)
    params = trainable(model)
    batches = make_batches()
    before = gradient_stats(model, cross_entropy, batches, params)
    scale_(params, 3.0)
    after = gradient_stats(model, cross_entropy, batches, params)
    assert after.grad_norm == pytest.approx(before.grad_norm / 3.0, rel=1e-8)
    assert after.eff_grad_norm == pytest.approx(before.eff_grad_norm, rel=1e-8)
    assert after.snr == pytest.approx(before.snr, rel=1e-8)


def test_gradient_stats_leave_running_stats_and_eval_mode_unchanged():
    model = bn_mlp().eval()
    buffers = [b.clone() for b in model.buffers()]
    gradient_stats(model, cross_entropy, make_batches(), trainable(model))
    assert not any(m.training for m in model.modules())
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers()))
    assert all(p.grad is None for p in model.parameters())


def test_a_single_batch_has_no_gradient_noise():
    model = bn_mlp()
    stats = gradient_stats(model, cross_entropy, make_batches((12,)), trainable(model))
    assert stats.grad_variance == 0.0 and math.isinf(stats.snr)
    assert stats.full_grad_norm == pytest.approx(stats.grad_norm, rel=1e-12)


def test_the_radius_argument_replaces_the_joint_norm():
    model = bn_mlp()
    stats = gradient_stats(model, cross_entropy, make_batches(), trainable(model), radius=10.0)
    assert stats.radius == 10.0
    assert stats.eff_grad_norm == pytest.approx(10.0 * stats.grad_norm, rel=1e-12)


def test_a_frozen_parameter_in_params_raises_value_error():
    model = bn_mlp()
    with pytest.raises(ValueError, match="requires_grad"):
        gradient_stats(model, cross_entropy, make_batches(), list(model.parameters()))
