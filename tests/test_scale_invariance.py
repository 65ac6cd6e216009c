"""Tests of scale_invariance: graph analysis, make_scale_invariant and the numerical check."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spherelab.models import build_model
from spherelab.sphere.check import (
    check_scale_invariance,
    graph_si_parameters,
    si_parameters,
)
from spherelab.sphere.graph import NotTraceableError
from spherelab.sphere.recipe import freeze_head, make_scale_invariant


class UserCNN(nn.Module):
    """A typical user model: conv biases, affine BN, functional pooling, a biased head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.adaptive_avg_pool2d(F.relu(self.bn2(self.conv2(x))), 1)
        return self.fc(x.view(x.size(0), -1))


def mlp(*layers: nn.Module) -> nn.Sequential:
    return nn.Sequential(*layers).double()


def ln_mlp() -> nn.Sequential:
    return mlp(
        nn.Linear(6, 8),
        nn.LayerNorm(8),
        nn.ReLU(),
        nn.Linear(8, 8),
        nn.LayerNorm(8),
        nn.GELU(),
        nn.Linear(8, 3),
    )


def unnormalized_mlp() -> nn.Sequential:
    """The second hidden linear never reaches a norm: its output flows straight to the head."""
    return mlp(
        nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)
    )


def images(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def vectors(n: int = 10) -> torch.Tensor:
    return torch.randn(n, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def ids(params) -> set[int]:
    return {id(p) for p in params}


def test_make_scale_invariant_turns_a_user_cnn_into_a_fully_si_model():
    torch.manual_seed(0)
    model = UserCNN()
    found = make_scale_invariant(model)
    assert ids(found) == {id(model.conv1.weight), id(model.conv2.weight)}
    assert model.conv1.bias is None and model.conv2.bias is None and model.fc.bias is None
    assert model.bn1.weight is None and not model.bn1.affine
    assert not model.fc.weight.requires_grad
    assert model.fc.weight.norm().item() == pytest.approx(10.0)
    assert ids(p for p in model.parameters() if p.requires_grad) == ids(found)
    check = check_scale_invariance(model.double(), images(), params=found)
    assert check.ok, str(check)


def test_make_scale_invariant_handles_layernorm_mlp_and_an_explicit_head():
    model = ln_mlp()
    found = make_scale_invariant(model, head=model[6], head_norm=4.0)
    assert ids(found) == {id(model[0].weight), id(model[3].weight)}
    assert model[6].weight.norm().item() == pytest.approx(4.0)
    assert model[1].weight is None and model[1].bias is None
    assert check_scale_invariance(model, vectors(), params=found).ok


def test_make_scale_invariant_draws_the_same_head_whatever_the_global_seed():
    heads = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = UserCNN()
        make_scale_invariant(model, head_seed=7)
        heads.append(model.fc.weight)
    assert torch.equal(*heads)


def test_make_scale_invariant_names_a_linear_that_never_reaches_a_norm_and_changes_nothing():
    model = unnormalized_mlp()
    with pytest.raises(ValueError, match=r"'3\.weight'.*normalization"):
        make_scale_invariant(model)
    assert model[1].affine and model[5].weight.requires_grad and model[0].bias is not None


def test_untraceable_model_gets_a_clear_error():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) if x.sum() > 0 else x

    with pytest.raises(NotTraceableError, match="si_parameters"):
        make_scale_invariant(Branchy())


def test_graph_analysis_keeps_conv_bias_before_batchnorm_and_drops_the_head():
    model = UserCNN()
    assert ids(graph_si_parameters(model)) == ids(
        [model.conv1.weight, model.conv1.bias, model.conv2.weight, model.conv2.bias]
    )


def test_graph_analysis_accepts_stacked_linears_before_a_norm():
    model = mlp(
        nn.Linear(6, 8, bias=False),
        nn.ReLU(),
        nn.Linear(8, 8, bias=False),
        nn.BatchNorm1d(8),
        nn.Linear(8, 3),
    )
    assert ids(graph_si_parameters(model)) == {id(model[0].weight), id(model[2].weight)}
    assert check_scale_invariance(model, vectors()).ok


def test_graph_analysis_rejects_a_residual_that_mixes_the_raw_input_with_a_conv():
    class RawResidual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3)
            self.conv2, self.bn2 = nn.Conv2d(3, 3, 1, bias=False), nn.BatchNorm2d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn2(self.conv2(self.bn(x + self.conv(x))))

    model = RawResidual()
    assert ids(graph_si_parameters(model)) == {id(model.conv2.weight)}


def test_si_parameters_prefers_the_models_own_declaration():
    model = build_model("convnet_af", width=2, depth=1)
    assert si_parameters(model) == model.si_parameters()
    assert ids(si_parameters(nn.Sequential(*model.children()))) == ids(model.si_parameters())


def test_declaring_the_head_as_si_fails_and_names_it():
    torch.manual_seed(0)
    model = build_model("convnet_si", width=2, depth=2).double()
    check = check_scale_invariance(
        model, images(), params=model.si_parameters() + [model.head.weight]
    )
    assert not check.ok and "head.weight" in check.non_si and "head.weight" in str(check)
    assert "FAILED" in str(check)


def test_declaring_a_biased_linear_before_layernorm_fails():
    model = ln_mlp()
    check = check_scale_invariance(model, vectors(), params=[model[0].weight])
    assert not check.ok and check.non_si == ["0.weight"]


def test_declaring_a_linear_without_a_norm_after_it_fails():
    model = unnormalized_mlp()
    check = check_scale_invariance(model, vectors(), params=[model[0].weight, model[3].weight])
    assert not check.ok and check.non_si == ["3.weight"]


def test_resnet_is_only_jointly_scale_invariant():
    torch.manual_seed(0)
    model = build_model("resnet18_si", width=2).double()
    check = check_scale_invariance(model, images())
    assert check.ok, str(check)
    assert check.per_tensor["stem.weight"] > check.tol and check.non_si == []


def test_check_probes_single_tensors_only_on_failure_when_asked():
    model = unnormalized_mlp()
    good = check_scale_invariance(model, vectors(), params=[model[0].weight], probe_tensors=False)
    bad = check_scale_invariance(
        model, vectors(), params=[model[0].weight, model[3].weight], probe_tensors=False
    )
    assert good.ok and good.per_tensor == {}
    assert not bad.ok and bad.non_si == ["3.weight"]


def test_check_reports_the_tiny_change_due_to_batchnorm_eps_in_float64():
    torch.manual_seed(0)
    model = build_model("convnet_si", width=4, depth=2).double()
    check = check_scale_invariance(model, images(8))
    assert check.max_rel_change < 1e-12
    assert 1e-9 < check.eps_error < 1e-2
    assert check.eps_error == pytest.approx(check.rel_change_with_eps - check.max_rel_change)


def test_check_passes_in_float32_for_a_fully_si_model():
    torch.manual_seed(0)
    model = build_model("convnet_si", width=4, depth=2)
    assert check_scale_invariance(model, images().float()).ok


def test_check_restores_mode_buffers_eps_and_parameters():
    torch.manual_seed(0)
    model = build_model("convnet_si", width=2, depth=1).double()
    model.features[1].eps = 1e-3
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    check_scale_invariance(model, images())
    assert not model.training and not model.features[1].training
    assert model.features[1].eps == 1e-3
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_check_rejects_bad_scales():
    model = build_model("mlp_si", in_features=6, width=4).double()
    with pytest.raises(ValueError, match="scales="):
        check_scale_invariance(model, vectors(), scales=(1.0,))


def test_freeze_head_rejects_a_non_positive_norm():
    with pytest.raises(ValueError, match="head_norm=-1"):
        freeze_head(nn.Linear(3, 2), norm=-1)


def _joint_norm(tensors) -> torch.Tensor:
    return torch.sqrt(sum((t * t).sum() for t in tensors))


def _cosine_of_gradient_and_weights(model: nn.Module, x: torch.Tensor) -> float:
    params = model.si_parameters()
    y = torch.arange(x.shape[0]) % 10
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), params)
    dot = sum((g * p).sum() for g, p in zip(grads, params))
    return abs((dot / (_joint_norm(grads) * _joint_norm(params))).item())


@pytest.mark.parametrize("name", ["convnet_si", "resnet18_si", "mlp_si"])
def test_gradient_of_the_loss_is_orthogonal_to_the_si_weights(name):
    torch.manual_seed(0)
    model = build_model(name, width=4, depth=2, in_features=6).double().train()
    x = vectors(16) if name == "mlp_si" else images(6)
    assert _cosine_of_gradient_and_weights(model, x) < 1e-3  # BN eps = 1e-5 limits it
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d | nn.BatchNorm1d):
            mod.eps = 1e-300
    assert _cosine_of_gradient_and_weights(model, x) < 1e-10
