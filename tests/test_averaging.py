"""SWA on the sphere (direction average, renormalization, BN statistics) and the geodesic path."""

import math

import pytest
import torch
from torch import nn

from spherelab.metrics.geometry import joint_norm
from spherelab.models import build_model
from spherelab.sphere.check import si_parameters
from spherelab.studies.averaging import (
    average_directions,
    geodesic,
    recompute_bn_stats,
    slerp,
    swa,
)

D = torch.float64


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(
        "mlp_si", num_classes=3, width=6, depth=2, head_seed=0, head_norm=10.0, in_features=5
    ).to(D)


def _batches(n: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(16, 5, generator=g, dtype=D), torch.randint(0, 3, (16,), generator=g))
        for _ in range(n)
    ]


def test_direction_average_of_known_vectors_is_the_renormalized_mean_direction():
    a = [torch.tensor([3.0, 0.0], dtype=D), torch.tensor([0.0], dtype=D)]
    b = [torch.tensor([0.0, 0.0], dtype=D), torch.tensor([5.0], dtype=D)]
    out = average_directions([a, b], radius=2.0)
    expected = 2.0 / math.sqrt(2)  # mean of (1,0,0) and (0,0,1), rescaled to norm 2
    assert torch.allclose(out[0], torch.tensor([expected, 0.0], dtype=D))
    assert torch.allclose(out[1], torch.tensor([expected], dtype=D))
    default = average_directions([a, b])  # radius = mean norm = 4
    assert float(joint_norm(default)) == pytest.approx(4.0)


def test_direction_average_ignores_the_scale_of_each_solution():
    a = [torch.randn(4, 3, dtype=D), torch.randn(5, dtype=D)]
    b = [torch.randn(4, 3, dtype=D), torch.randn(5, dtype=D)]
    one = average_directions([a, b], radius=1.0)
    scaled = average_directions([[7 * t for t in a], [0.1 * t for t in b]], radius=1.0)
    assert all(torch.allclose(x, y) for x, y in zip(one, scaled))


def test_antipodal_solutions_cannot_be_averaged():
    a = [torch.tensor([1.0, 2.0], dtype=D)]
    with pytest.raises(ValueError, match="cancel"):
        average_directions([a, [-a[0]]])


def test_recomputed_bn_statistics_equal_a_manual_pass():
    model, batches = _net(0), _batches()
    bn = next(m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    model.eval()
    captured = []
    hook = bn.register_forward_hook(lambda m, inp, out: captured.append(inp[0].detach()))
    recompute_bn_stats(model, batches)
    hook.remove()
    mean = torch.stack([x.mean(0) for x in captured]).mean(0)
    var = torch.stack([x.var(0, unbiased=True) for x in captured]).mean(0)
    assert len(captured) == len(batches)
    assert torch.allclose(bn.running_mean, mean) and torch.allclose(bn.running_var, var)
    assert bn.momentum == 0.1 and not any(m.training for m in model.modules())  # restored


def test_swa_puts_the_average_direction_at_the_radius_and_refreshes_bn():
    nets, batches = [_net(s) for s in (0, 1, 2)], _batches()
    states = [{k: v.clone() for k, v in n.state_dict().items()} for n in nets]
    target = _net(3)
    swa(target, states, batches, radius=5.0)
    si = si_parameters(target)
    names = {id(p): n for n, p in target.named_parameters()}
    expected = average_directions([[s[names[id(p)]] for p in si] for s in states], radius=5.0)
    assert float(joint_norm(si)) == pytest.approx(5.0)
    assert all(torch.allclose(p, e) for p, e in zip(si, expected))
    manual = _net(4)
    manual.load_state_dict(target.state_dict())
    recompute_bn_stats(manual, batches)
    for a, b in zip(target.buffers(), manual.buffers()):
        assert torch.equal(a, b)


def test_geodesic_endpoints_are_the_solutions_and_the_path_stays_on_the_sphere():
    a = [torch.randn(3, 4, dtype=D), torch.randn(6, dtype=D)]
    b = [torch.randn(3, 4, dtype=D), torch.randn(6, dtype=D)]
    b = [t * float(joint_norm(a) / joint_norm(b)) for t in b]  # same radius
    assert all(torch.allclose(x, y) for x, y in zip(slerp(a, b, 0.0), a))
    assert all(torch.allclose(x, y) for x, y in zip(slerp(a, b, 1.0), b))
    for t in (0.1, 0.37, 0.5, 0.9):
        assert float(joint_norm(slerp(a, b, t))) == pytest.approx(float(joint_norm(a)))
    mid = slerp(a, b, 0.5)  # equidistant in angle from both ends

    def cos(u, v):
        return float(sum((x * y).sum() for x, y in zip(u, v)) / joint_norm(u) / joint_norm(v))

    assert cos(mid, a) == pytest.approx(cos(mid, b))


def test_barrier_of_identical_endpoints_is_zero_and_weights_are_restored():
    model, batches = _net(0), _batches()
    si = si_parameters(model)
    before = [p.detach().clone() for p in si]
    result = geodesic(model, before, [p.clone() for p in before], batches, n_points=5)
    assert result.barrier == 0.0 and result.barrier_to_mean == pytest.approx(0.0, abs=1e-12)
    assert max(result.losses) - min(result.losses) < 1e-12
    assert result.angle == pytest.approx(0.0, abs=1e-6)
    assert all(torch.equal(p, q) for p, q in zip(si, before))


def test_geodesic_between_different_solutions_reports_the_loss_at_its_ends():
    model, batches = _net(0), _batches()
    a = [p.detach().clone() for p in si_parameters(model)]
    b = [p.detach().clone() for p in si_parameters(_net(1))]
    result = geodesic(model, a, b, batches, n_points=4)
    assert result.ts == [0.0, 1 / 3, 2 / 3, 1.0]
    assert result.barrier == pytest.approx(
        max(result.losses) - max(result.losses[0], result.losses[-1])
    )
    assert result.barrier >= 0 and 0 < result.angle < math.pi
    ends = [
        geodesic(model, a, a, batches, n_points=2).losses[0],
        geodesic(model, b, b, batches, n_points=2).losses[0],
    ]
    assert result.losses[0] == pytest.approx(ends[0]) and result.losses[-1] == pytest.approx(
        ends[1]
    )
