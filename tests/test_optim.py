"""SphereSGD: the paper's rule, granularities, momentum, plain groups, foreach, state_dict."""

import copy

import pytest
import torch
from torch import nn

from spherelab import SphereSGD


def _si_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(6, 8, bias=False),
        nn.BatchNorm1d(8, affine=False),
        nn.ReLU(),
        nn.Linear(8, 5, bias=False),
        nn.BatchNorm1d(5, affine=False),
        nn.ReLU(),
        nn.Linear(5, 3, bias=False),
    ).double()
    net[-1].weight.requires_grad_(False)
    return net


def _si_params(net: nn.Module) -> list[nn.Parameter]:
    return [p for p in net.parameters() if p.requires_grad]


def _loss(net: nn.Module, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(step)
    x = torch.randn(16, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (16,), generator=g)
    return nn.functional.cross_entropy(net(x), y)


def _train(net, opt, steps=100):
    for t in range(steps):
        opt.zero_grad()
        _loss(net, t).backward()
        opt.step()


def _joint_norm(params) -> float:
    return torch.sqrt(sum(p.detach().square().sum() for p in params)).item()


def test_trajectory_equals_the_papers_rule_over_100_steps_in_float64():
    elr = 0.05
    net_a, net_b = _si_net(), _si_net()
    params_b = _si_params(net_b)
    rho0 = _joint_norm(params_b)
    _train(net_a, SphereSGD(_si_params(net_a), elr=elr))
    # The paper's rule: plain SGD with lr = ELR * rho0^2, then one global rescale.
    for t in range(100):
        for p in params_b:
            p.grad = None
        _loss(net_b, t).backward()
        with torch.no_grad():
            for p in params_b:
                p -= elr * rho0**2 * p.grad
            scale = rho0 / _joint_norm(params_b)
            for p in params_b:
                p *= scale
    err = max((a - b).abs().max().item() for a, b in zip(_si_params(net_a), params_b))
    assert err < 1e-10


@pytest.mark.parametrize("weight_decay", [0.0, 0.3])
def test_paper_momentum_is_torch_sgd_then_the_global_rescale(weight_decay):
    elr, mu = 0.05, 0.9
    net_a, net_b = _si_net(), _si_net()
    params_b = _si_params(net_b)
    rho0 = _joint_norm(params_b)
    opt_a = SphereSGD(
        _si_params(net_a), elr=elr, momentum=mu, momentum_style="paper", weight_decay=weight_decay
    )
    _train(net_a, opt_a, steps=30)
    sgd = torch.optim.SGD(params_b, lr=elr * rho0**2, momentum=mu, weight_decay=weight_decay)
    for t in range(30):
        sgd.zero_grad()
        _loss(net_b, t).backward()
        sgd.step()
        with torch.no_grad():
            scale = rho0 / _joint_norm(params_b)
            for p in params_b:
                p *= scale
    err = max((a - b).abs().max().item() for a, b in zip(_si_params(net_a), params_b))
    assert err < 1e-12
    for a, b in zip(_si_params(net_a), params_b):  # the buffer is torch's, never projected
        torch.testing.assert_close(
            opt_a.state[a]["momentum_buffer"], sgd.state[b]["momentum_buffer"], rtol=0, atol=1e-12
        )


def test_paper_and_tangent_momentum_differ_but_agree_without_momentum():
    def run(style: str, mu: float) -> list[torch.Tensor]:
        net = _si_net()
        _train(net, SphereSGD(_si_params(net), elr=0.05, momentum=mu, momentum_style=style), 10)
        return _si_params(net)

    same = zip(run("paper", 0.0), run("tangent", 0.0))
    assert all(torch.equal(a, b) for a, b in same)
    apart = zip(run("paper", 0.9), run("tangent", 0.9))
    assert max((a - b).abs().max().item() for a, b in apart) > 1e-4


def test_unknown_momentum_style_and_negative_weight_decay_are_rejected():
    with pytest.raises(ValueError, match="momentum_style='heavy'"):
        SphereSGD([nn.Parameter(torch.ones(3))], momentum_style="heavy")
    with pytest.raises(ValueError, match="weight_decay=-1"):
        SphereSGD([nn.Parameter(torch.ones(3))], weight_decay=-1.0)


def test_a_state_dict_from_before_momentum_styles_loads_as_tangent():
    p = nn.Parameter(torch.ones(3))
    opt = SphereSGD([p], elr=0.1, momentum=0.5, momentum_style="paper")
    state = copy.deepcopy(opt.state_dict())
    del state["param_groups"][0]["momentum_style"]
    opt.load_state_dict(state)
    assert opt.param_groups[0]["momentum_style"] == "tangent"


def test_step_keeps_the_joint_norm_at_the_radius():
    net = _si_net()
    params = _si_params(net)
    opt = SphereSGD(params, elr=0.5, momentum=0.9)
    rho0 = opt.param_groups[0]["radius"]
    _train(net, opt, steps=20)
    assert _joint_norm(params) == pytest.approx(rho0, rel=1e-12)


def test_given_radius_is_used_and_lr_is_elr_times_radius_squared():
    net = _si_net()
    params = _si_params(net)
    opt = SphereSGD(params, elr=0.1, radius=3.0)
    _train(net, opt, steps=1)
    assert _joint_norm(params) == pytest.approx(3.0, rel=1e-12)


@pytest.mark.parametrize("sphere", ["per_tensor", "per_filter"])
def test_finer_spheres_keep_each_unit_norm(sphere):
    net = _si_net()
    params = _si_params(net)
    before = [
        p.detach().norm(dim=1) if sphere == "per_filter" else p.detach().norm() for p in params
    ]
    opt = SphereSGD(params, elr=0.3, sphere=sphere, momentum=0.5)
    _train(net, opt, steps=10)
    after = [
        p.detach().norm(dim=1) if sphere == "per_filter" else p.detach().norm() for p in params
    ]
    for b, a in zip(before, after):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
    assert not torch.equal(params[0], _si_params(_si_net())[0])


def test_momentum_buffer_is_tangent_at_the_new_point():
    net = _si_net()
    params = _si_params(net)
    opt = SphereSGD(params, elr=0.2, momentum=0.9)
    _train(net, opt, steps=5)
    bufs = [opt.state[p]["momentum_buffer"] for p in params]
    dot = sum((b * p).sum() for b, p in zip(bufs, params)).item()
    assert abs(dot) < 1e-12 * _joint_norm(bufs) * _joint_norm(params) + 1e-14
    assert _joint_norm(bufs) > 0


def test_momentum_step_matches_its_documented_definition():
    net_a, net_b = _si_net(), _si_net()
    pa, pb = _si_params(net_a), _si_params(net_b)
    opt = SphereSGD(pa, elr=0.1, momentum=0.9)
    radius = opt.param_groups[0]["radius"]
    _train(net_a, opt, steps=3)
    bufs = None
    for t in range(3):
        for p in pb:
            p.grad = None
        _loss(net_b, t).backward()
        with torch.no_grad():
            grads = [p.grad.clone() for p in pb]
            bufs = grads if bufs is None else [0.9 * b + g for b, g in zip(bufs, grads)]
            for p, b in zip(pb, bufs):
                p -= 0.1 * radius**2 * b
            scale = radius / _joint_norm(pb)
            for p in pb:
                p *= scale
            coef = sum((b * p).sum() for b, p in zip(bufs, pb)) / radius**2
            bufs = [b - coef * p for b, p in zip(bufs, pb)]
    for a, b in zip(pa, pb):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_foreach_path_equals_the_reference_loop_in_float64():
    net_a, net_b = _si_net(), _si_net()
    _train(net_a, SphereSGD(_si_params(net_a), elr=0.05, momentum=0.5, foreach=True), 30)
    _train(net_b, SphereSGD(_si_params(net_b), elr=0.05, momentum=0.5, foreach=False), 30)
    for a, b in zip(_si_params(net_a), _si_params(net_b)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_plain_group_uses_its_own_lr_and_weight_decay():
    net = _si_net()
    head = net[-1].weight
    head.requires_grad_(True)
    si = [p for p in net.parameters() if p is not head]
    opt = SphereSGD(
        [{"params": si}, {"params": [head], "sphere": "none", "lr": 0.1, "weight_decay": 0.01}],
        elr=0.05,
    )
    before = head.detach().clone()
    opt.zero_grad()
    _loss(net, 0).backward()
    expected = before - 0.1 * (head.grad + 0.01 * before)
    opt.step()
    torch.testing.assert_close(head.detach(), expected, rtol=0, atol=1e-14)


def test_state_dict_round_trip_keeps_radius_and_buffers():
    net_a = _si_net()
    opt_a = SphereSGD(_si_params(net_a), elr=0.1, momentum=0.9)
    _train(net_a, opt_a, steps=3)
    net_b = copy.deepcopy(net_a)
    with torch.no_grad():  # a different point: the radius must come from the state, not here
        for p in _si_params(net_b):
            p.mul_(2.0)
    opt_b = SphereSGD(_si_params(net_b), elr=0.1, momentum=0.9)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    assert opt_b.param_groups[0]["radius"] == opt_a.param_groups[0]["radius"]
    with torch.no_grad():
        for pa, pb in zip(_si_params(net_a), _si_params(net_b)):
            pb.copy_(pa)
    for pa, pb in zip(_si_params(net_a), _si_params(net_b)):
        torch.testing.assert_close(
            opt_b.state[pb]["momentum_buffer"], opt_a.state[pa]["momentum_buffer"], rtol=0, atol=0
        )
    _train(net_a, opt_a, steps=3)
    _train(net_b, opt_b, steps=3)
    for a, b in zip(_si_params(net_a), _si_params(net_b)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_members_have_their_own_sphere_and_elr():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(3, 4, 5, dtype=torch.float64))  # K=3 members of 4x5
    radii = w.detach().reshape(3, -1).norm(dim=1)
    opt = SphereSGD([w], elr=[0.1, 0.2, 0.3], members=3)
    single = [nn.Parameter(w.detach()[k].clone()) for k in range(3)]
    singles = [SphereSGD([s], elr=e) for s, e in zip(single, [0.1, 0.2, 0.3])]
    target = torch.randn(3, 4, 5, dtype=torch.float64)
    for _ in range(5):
        w.grad = None
        ((w - target) ** 3).sum().backward()
        opt.step()
        for k in range(3):
            single[k].grad = None
            ((single[k] - target[k]) ** 3).sum().backward()
            singles[k].step()
    torch.testing.assert_close(w.detach().reshape(3, -1).norm(dim=1), radii, rtol=1e-12, atol=0)
    for k in range(3):
        torch.testing.assert_close(w.detach()[k], single[k].detach(), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "elr, message",
    [
        (torch.tensor([1e-3, -1.0]), "must be > 0"),
        (torch.tensor([1e-3, 1e-3, 1e-3]), "3 values but members=2"),
        ([1e-3, 1e-3, 1e-3], "3 values but members=2"),
    ],
)
def test_per_member_elrs_are_checked_at_construction_lists_and_tensors_alike(elr, message):
    with pytest.raises(ValueError, match=message):
        SphereSGD([nn.Parameter(torch.ones(2, 3))], elr=elr, members=2)


@pytest.mark.parametrize("radius", [2.0, torch.tensor(2.0), (2.0, 2.0, 2.0), [2.0] * 3])
def test_one_radius_for_all_members_steps_like_the_loop(radius):
    torch.manual_seed(0)
    first = nn.Parameter(torch.randn(3, 4, 5, dtype=torch.float64))
    w = [first, nn.Parameter(first.detach().clone())]
    opts = [
        SphereSGD([p], elr=1e-2, members=3, radius=radius, foreach=fast)
        for p, fast in zip(w, (None, False))
    ]
    for p, opt in zip(w, opts):
        p.grad = torch.ones_like(p)
        opt.step()
    torch.testing.assert_close(w[0], w[1], rtol=0, atol=1e-14)
    norms = w[0].detach().reshape(3, -1).norm(dim=1)
    torch.testing.assert_close(norms, torch.full((3,), 2.0, dtype=torch.float64))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"members": 3, "radius": [1.0, 2.0]}, "one per member"),
        ({"sphere": "per_tensor", "radius": [1.0, 2.0, 3.0]}, "one per tensor"),
    ],
)
def test_a_radius_of_the_wrong_length_is_refused_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SphereSGD([nn.Parameter(torch.ones(3, 2)), nn.Parameter(torch.ones(3, 4))], **kwargs)


def test_a_device_tensor_of_member_elrs_steps_like_a_list():
    torch.manual_seed(0)
    a = nn.Parameter(torch.randn(2, 3, dtype=torch.float64))
    b = nn.Parameter(a.detach().clone())
    opts = [
        SphereSGD([a], elr=[0.1, 0.2], members=2),
        SphereSGD([b], elr=torch.tensor([0.1, 0.2], dtype=torch.float64), members=2),
    ]
    for p, opt in zip((a, b), opts):
        p.grad = torch.ones_like(p)
        opt.step()
    torch.testing.assert_close(a, b, rtol=0, atol=1e-15)


@pytest.mark.parametrize("bad", [0.0, -1e-3])
def test_non_positive_elr_is_rejected_with_a_hint(bad):
    with pytest.raises(ValueError, match="must be > 0"):
        SphereSGD([nn.Parameter(torch.ones(3))], elr=bad)


def test_unknown_sphere_is_rejected_with_the_valid_names():
    with pytest.raises(ValueError, match="per_filter"):
        SphereSGD([nn.Parameter(torch.ones(3))], elr=0.1, sphere="ball")


def test_a_group_added_later_gets_its_own_radius():
    net = _si_net()
    first, *rest = _si_params(net)
    opt = SphereSGD([first], elr=0.1)
    opt.add_param_group({"params": rest, "sphere": "per_tensor"})
    assert opt.param_groups[1]["radius"] == pytest.approx([p.norm().item() for p in rest])
    _train(net, opt, steps=2)
    assert [p.norm().item() for p in rest] == pytest.approx(
        opt.param_groups[1]["radius"], rel=1e-12
    )


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"radius": -1.0}, "positive"),
        ({"radius": [1.0, 2.0]}, "one sphere"),
    ],
)
def test_bad_radius_is_rejected_at_construction(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        SphereSGD([nn.Parameter(torch.ones(3, 2))], elr=0.1, **kwargs)


def test_bad_group_momentum_is_rejected():
    with pytest.raises(ValueError, match="momentum"):
        SphereSGD([{"params": [nn.Parameter(torch.ones(3))], "momentum": 1.5}], elr=0.1)


def test_a_tensor_without_gradient_stays_on_the_joint_sphere():
    a = nn.Parameter(torch.randn(4, 3, dtype=torch.float64))
    b = nn.Parameter(torch.randn(5, dtype=torch.float64))
    opt = SphereSGD([a, b], elr=0.5)
    radius = opt.param_groups[0]["radius"]
    (a.sum() ** 2).backward()  # b gets no gradient this step
    opt.step()
    assert _joint_norm([a, b]) == pytest.approx(radius, rel=1e-12)


@pytest.mark.parametrize("sphere", ["global", "per_tensor", "per_filter"])
def test_channels_last_weights_follow_the_same_trajectory(sphere):
    torch.manual_seed(0)
    w = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    target = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    plain = nn.Parameter(w.clone())
    packed = nn.Parameter(w.clone().contiguous(memory_format=torch.channels_last))
    opts = [
        SphereSGD([q], elr=0.2, momentum=0.9, sphere=sphere, foreach=False) for q in (plain, packed)
    ]
    for _ in range(3):
        for q, opt in zip((plain, packed), opts):
            q.grad = None
            ((q - target) ** 3).sum().backward()
            opt.step()
    torch.testing.assert_close(packed.detach(), plain.detach(), rtol=0, atol=1e-12)
