"""make_optimizer and set_rate: the paper's per-filter ELR unit, the non-SI learning rate, the
sphere weight decay and momentum style, and the checks of their settings."""

import math

import pytest
import torch
from torch import nn

from spherelab.config import Config, OptimConfig
from spherelab.train.optimizer import filter_count, make_optimizer, set_rate
from spherelab.train.validation import validate_config


def _net() -> tuple[nn.Module, list[nn.Parameter]]:
    """Two per-filter SI convs (each filter feeds its own BN channel; a tiny eps makes it exact) and
    a trainable head."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, bias=False), nn.BatchNorm2d(3, eps=1e-300, affine=False), nn.ReLU(),
        nn.Conv2d(3, 5, 3, bias=False), nn.BatchNorm2d(5, eps=1e-300, affine=False), nn.ReLU(),
        nn.Flatten(), nn.Linear(5 * 2 * 2, 4),
    ).double()  # fmt: skip
    return net, [net[0].weight, net[3].weight]


def _filter_norms(si: list[nn.Parameter]) -> torch.Tensor:
    return torch.cat([p.detach().flatten(1).norm(dim=1) for p in si])


def test_the_papers_per_filter_unit_puts_every_filter_at_the_rms_norm_and_scales_the_elr():
    net, si = _net()
    x = torch.randn(6, 2, 6, 6, dtype=torch.float64)
    before, norms = net(x).detach(), _filter_norms(si)
    rms = norms.square().mean().sqrt()
    cfg = OptimConfig(sphere="per_filter", elr=1e-3, elr_unit="paper", lr=0.0)
    opt = make_optimizer(cfg, net, si)
    torch.testing.assert_close(_filter_norms(si), rms.expand(8), rtol=1e-15, atol=0)
    torch.testing.assert_close(net(x), before, rtol=0, atol=1e-12)  # every filter is SI
    assert filter_count(si) == 8 and opt.param_groups[0]["elr"] == pytest.approx(8e-3)
    lr, elr = set_rate(opt, cfg, 0.5)
    assert elr == 5e-4 and opt.param_groups[0]["elr"] == pytest.approx(4e-3)
    assert lr == pytest.approx(5e-4 * 8 * rms.item() ** 2)  # the paper's lr: elr * sum ||w_f||^2


def test_the_sphere_unit_keeps_each_filter_where_it_is():
    net, si = _net()
    norms = _filter_norms(si)
    opt = make_optimizer(OptimConfig(sphere="per_filter", elr=1e-3), net, si)
    assert torch.equal(_filter_norms(si), norms) and opt.param_groups[0]["elr"] == 1e-3


@pytest.mark.parametrize("others_lr, want", [("own", 0.07), ("si", None)])
def test_other_tensors_take_their_own_lr_or_the_si_lr(others_lr, want):
    net, si = _net()
    cfg = OptimConfig(elr=1e-3, lr=0.07, others_lr=others_lr, weight_decay=0.2)
    opt = make_optimizer(cfg, net, si)
    radius = opt.param_groups[0]["radius"]
    lr, _ = set_rate(opt, cfg, 0.5)
    head = opt.param_groups[1]
    assert head["sphere"] == "none" and head["weight_decay"] == 0.2
    if want is None:
        assert head["lr"] == lr == pytest.approx(0.5e-3 * radius**2)
    else:
        assert head["lr"] == pytest.approx(0.5 * want)


def test_momentum_style_and_sphere_weight_decay_reach_the_si_group_only():
    net, si = _net()
    cfg = OptimConfig(momentum=0.9, momentum_style="paper", sphere_weight_decay=0.01)
    opt = make_optimizer(cfg, net, si)
    assert opt.param_groups[0]["momentum_style"] == "paper"
    assert opt.param_groups[0]["weight_decay"] == 0.01
    assert opt.param_groups[1]["weight_decay"] == 0.0


@pytest.mark.parametrize(
    "over, match",
    [
        ({"optim.elr_unit": "paper", "optim.sphere": "per_tensor"}, "no per_tensor unit"),
        ({"optim.elr_unit": "filters"}, "optim.elr_unit='filters'"),
        ({"optim.others_lr": "si", "optim.sphere": "per_filter"}, "one SI learning rate"),
        ({"optim.others_lr": "head"}, "optim.others_lr='head'"),
        ({"optim.momentum_style": "nesterov"}, "optim.momentum_style='nesterov'"),
        ({"optim.sphere_weight_decay": -1.0}, "sphere_weight_decay=-1.0"),
        ({"train.ghost_batch": -1}, "train.ghost_batch=-1"),
        ({"train.loss": "mse_sum"}, "mse_class_mean"),
    ],
)
def test_bad_paper_settings_name_the_value_and_the_fix(over, match):
    with pytest.raises(ValueError, match=match):
        validate_config(Config().with_overrides(over))


def test_the_paper_unit_on_a_global_sphere_is_the_sphere_unit():
    validate_config(Config().with_overrides({"optim.elr_unit": "paper"}))
    net, si = _net()
    opt = make_optimizer(OptimConfig(elr=2e-3, elr_unit="paper"), net, si)
    assert opt.param_groups[0]["elr"] == 2e-3 and not math.isnan(opt.param_groups[0]["radius"])
