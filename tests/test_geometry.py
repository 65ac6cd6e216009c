"""Tests of spherelab.metrics.geometry: norms, angles, angular updates and effective learning rates."""

import math

import pytest
import torch

from spherelab.metrics import cosine
from spherelab.metrics.geometry import (
    AngularUpdateTracker,
    angle,
    angle_to_init,
    effective_elr,
    equilibrium_angle,
    joint_norm,
    per_layer_angles,
    per_layer_effective_elr,
    per_tensor_norms,
)


def _vectors(seed: int = 0, dtype=torch.float64) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.randn(3, 4, generator=gen, dtype=dtype),
        torch.randn(5, generator=gen, dtype=dtype),
    ]


def _flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def _rotated(a, b, theta: float):
    """cos(theta) a + sin(theta) b', b' = the part of b orthogonal to a, rescaled to |a|."""
    fa, fb = _flat(a), _flat(b)
    ortho = fb - (fb @ fa) / (fa @ fa) * fa
    ortho = ortho / ortho.norm() * fa.norm()
    flat = math.cos(theta) * fa + math.sin(theta) * ortho
    chunks = torch.split(flat, [t.numel() for t in a])
    return [c.view_as(t) for c, t in zip(chunks, a)]


def test_joint_norm_equals_the_norm_of_the_concatenation():
    a = _vectors()
    assert joint_norm(a).item() == pytest.approx(_flat(a).norm().item(), rel=1e-12)


def test_per_tensor_norms_are_keyed_by_name():
    a = _vectors()
    norms = per_tensor_norms({"w1": a[0], "w2": a[1]})
    assert norms == {
        "w1": pytest.approx(a[0].norm().item()),
        "w2": pytest.approx(a[1].norm().item()),
    }


def test_angle_of_orthogonal_vectors_is_half_pi():
    a = _vectors()
    b = _rotated(a, _vectors(1), math.pi / 2)
    assert angle(a, b) == pytest.approx(math.pi / 2, abs=1e-12)


def test_angle_of_parallel_vectors_is_zero_and_of_opposite_vectors_pi():
    a = _vectors()
    assert angle(a, [3.0 * t for t in a]) == pytest.approx(0.0, abs=1e-12)
    assert angle(a, [-t for t in a]) == pytest.approx(math.pi, abs=1e-12)


def test_angle_resolves_tiny_rotations_in_float32():
    a = _vectors(dtype=torch.float32)
    b = _rotated([t.double() for t in a], _vectors(1), 3e-5)
    assert angle(a, [t.float() for t in b]) == pytest.approx(3e-5, rel=1e-2)


def test_angle_of_a_zero_vector_raises_value_error():
    a = _vectors()
    with pytest.raises(ValueError, match="zero vector"):
        angle(a, [torch.zeros_like(t) for t in a])


def test_cosine_equals_the_cosine_of_the_angle():
    a, b = _vectors(0), _vectors(1)
    expected = (_flat(a) @ _flat(b) / (_flat(a).norm() * _flat(b).norm())).item()
    assert cosine(a, b) == pytest.approx(expected, rel=1e-12)
    assert math.cos(angle(a, b)) == pytest.approx(expected, rel=1e-10)


def test_angle_to_init_is_the_rotation_since_initialization():
    init = _vectors()
    cur = _rotated(init, _vectors(1), 0.3)
    assert angle_to_init([2.0 * t for t in cur], init) == pytest.approx(0.3, rel=1e-10)


def test_tracker_reports_mean_max_and_count_of_step_angles():
    thetas = [0.01, 0.2, 0.05, 0.003]
    tracker = AngularUpdateTracker()
    cur = _vectors()
    for theta in thetas:
        nxt = _rotated(cur, _vectors(len(thetas) + tracker.count), theta)
        tracker.update(cur, nxt)
        cur = nxt
    summary = tracker.summary()
    assert summary["count"] == len(thetas)
    assert summary["mean"] == pytest.approx(sum(thetas) / len(thetas), rel=1e-10)
    assert summary["max"] == pytest.approx(max(thetas), rel=1e-10)
    tracker.reset()
    assert tracker.count == 0 and math.isnan(tracker.summary()["mean"])


def test_per_layer_angles_measure_each_tensor_on_its_own():
    prev = _vectors()
    cur = [_rotated([prev[0]], [torch.randn(3, 4, dtype=torch.float64)], 0.1)[0], -prev[1]]
    angles = per_layer_angles(prev, cur, ["conv", "fc"])
    assert angles["conv"] == pytest.approx(0.1, rel=1e-10)
    assert angles["fc"] == pytest.approx(math.pi, rel=1e-10)


def test_effective_elr_is_lr_over_the_squared_norm_jointly_and_per_layer():
    a = _vectors()
    assert effective_elr(0.1, a) == pytest.approx(0.1 / (_flat(a) @ _flat(a)).item(), rel=1e-12)
    per_layer = per_layer_effective_elr(0.1, [("a", a[0]), ("b", a[1])])
    assert per_layer["b"] == pytest.approx(0.1 / (a[1] @ a[1]).item(), rel=1e-12)
    with pytest.raises(ValueError, match="lr"):
        effective_elr(-1.0, a)


def _simulated_equilibrium_angle(lr: float, wd: float, mu: float, steps: int = 20000) -> float:
    """Heavy-ball SGD with weight decay on a 2-D SI loss whose gradient is the 90-degree rotation of
    w scaled by 1/||w||^2 (tangent, effective norm 1); returns the per-step angle at the end."""
    w, v = (1.0, 0.0), (0.0, 0.0)
    theta = 0.0
    for _ in range(steps):
        sq = w[0] ** 2 + w[1] ** 2
        g = (-w[1] / sq + wd * w[0], w[0] / sq + wd * w[1])
        v = (mu * v[0] + g[0], mu * v[1] + g[1])
        new = (w[0] - lr * v[0], w[1] - lr * v[1])
        theta = math.atan2(abs(w[0] * new[1] - w[1] * new[0]), w[0] * new[0] + w[1] * new[1])
        w = new
    return theta


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_equilibrium_angle_matches_a_simulated_sgd_with_weight_decay(momentum):
    lr, wd = 0.1, 1e-2
    simulated = _simulated_equilibrium_angle(lr, wd, momentum)
    assert equilibrium_angle(lr, wd, momentum) == pytest.approx(simulated, rel=2e-3)


def test_equilibrium_angle_rejects_momentum_of_one():
    with pytest.raises(ValueError, match="momentum"):
        equilibrium_angle(0.1, 1e-4, momentum=1.0)
