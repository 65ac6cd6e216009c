"""Tests of the model zoo: sizes, heads, seeds, shapes, twins and the SI declarations."""

from __future__ import annotations

import dataclasses
import inspect
import math

import pytest
import torch
from torch import nn

from spherelab.config import ModelConfig
from spherelab.models import available_models, build_from_config, build_model
from spherelab.models.heads import ModelSpec
from spherelab.sphere.check import check_scale_invariance, graph_si_parameters

SI_NAMES = [n for n in available_models() if n.endswith("_si")]
AF_NAMES = [n for n in available_models() if n.endswith("_af")]
TINY = {"convnet": {"width": 4, "depth": 2}, "resnet18": {"width": 4}, "mlp": {"width": 8}}


def tiny(name: str, seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    family = name.rpartition("_")[0]
    return build_model(name, in_features=12, **{**TINY[family], **kwargs})


def tiny_batch(name: str, dtype=torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    shape = (16, 12) if name.startswith("mlp") else (6, 3, 16, 16)
    return torch.randn(shape, generator=gen, dtype=dtype)


def n_params(params) -> int:
    return sum(p.numel() for p in params)


def test_convnet_si_has_the_papers_387936_si_parameters():
    model = build_model("convnet_si")
    assert n_params(model.si_parameters()) == 387_936


def test_convnet_radius_at_init_matches_pytorch_default_init_variance():
    torch.manual_seed(0)
    params = build_model("convnet_si").si_parameters()
    # kaiming_uniform(a=sqrt(5)) draws U(+-1/sqrt(fan_in)): E[w^2] = 1 / (3 fan_in)
    expected = sum(p.numel() / (3 * p[0].numel()) for p in params)
    rho0 = torch.sqrt(sum((p.detach() ** 2).sum() for p in params)).item()
    assert rho0 == pytest.approx(math.sqrt(expected), rel=0.01)
    assert rho0 == pytest.approx(12.65, abs=0.05)  # the paper's value


def test_resnet18_si_parameter_count_matches_its_architecture():
    k, c_in = 8, 1
    model = build_model("resnet18_si", width=k, in_channels=c_in, image_size=28)
    expected, planes_in = 9 * c_in * k, k
    for stage in range(4):
        planes = k * 2**stage
        for _ in range(2):
            expected += 9 * planes_in * planes + 9 * planes * planes
            expected += planes_in * planes if planes_in != planes else 0  # 1x1 shortcut
            planes_in = planes
    assert n_params(model.si_parameters()) == expected
    assert model.head.in_features == 8 * k


def test_mlp_si_parameter_count_is_input_plus_hidden_layers():
    model = build_model("mlp_si", in_features=40, width=16, depth=3)
    assert n_params(model.si_parameters()) == 40 * 16 + 2 * 16 * 16


@pytest.mark.parametrize("name", SI_NAMES)
def test_si_head_is_frozen_bias_free_and_of_norm_head_norm(name):
    model = tiny(name, head_norm=3.0)
    assert isinstance(model.head, nn.Linear) and model.head.bias is None
    assert not model.head.weight.requires_grad
    assert model.head.weight.norm().item() == pytest.approx(3.0, rel=1e-6)
    assert model.fully_si


@pytest.mark.parametrize("name", SI_NAMES)
def test_si_head_is_identical_across_global_seeds_and_follows_head_seed(name):
    a, b = tiny(name, seed=1), tiny(name, seed=2)
    assert torch.equal(a.head.weight, b.head.weight)
    assert not torch.equal(a.si_parameters()[0], b.si_parameters()[0])
    c = tiny(name, seed=1, head_seed=5)
    assert not torch.equal(a.head.weight, c.head.weight)


@pytest.mark.parametrize("family", ["convnet", "resnet18", "mlp"])
def test_twins_draw_the_same_si_weights_under_the_same_seed(family):
    si, af = tiny(f"{family}_si", seed=3), tiny(f"{family}_af", seed=3)
    assert all(torch.equal(p, q) for p, q in zip(si.si_parameters(), af.si_parameters()))


@pytest.mark.parametrize("name", AF_NAMES)
def test_af_twins_train_every_parameter_including_norms_and_head_bias(name):
    model = tiny(name)
    assert not model.fully_si
    assert all(p.requires_grad for p in model.parameters())
    assert model.head.bias is not None
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(m.affine for m in norms)


@pytest.mark.parametrize("name", SI_NAMES)
def test_fully_si_models_train_only_their_declared_si_weights(name):
    model = tiny(name)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in model.si_parameters()}


@pytest.mark.parametrize("name", available_models())
def test_si_declaration_agrees_with_the_module_graph_analysis(name):
    model = tiny(name)
    assert {id(p) for p in graph_si_parameters(model)} == {id(p) for p in model.si_parameters()}


@pytest.mark.parametrize("name", available_models())
def test_every_model_passes_the_scale_invariance_check_in_float64(name):
    model = tiny(name).double()
    check = check_scale_invariance(model, tiny_batch(name))
    assert check.ok, str(check)
    assert check.max_rel_change < 1e-12
    assert 0 < check.eps_error < 1e-2  # BN eps = 1e-5 makes invariance approximate


@pytest.mark.parametrize("family", ["convnet", "resnet18"])
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_image_models_map_images_to_logits(family, channels, size):
    model = tiny(f"{family}_si", num_classes=7, in_channels=channels, image_size=size)
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 7)


@pytest.mark.parametrize("shape", [(5, 40), (5, 1, 40)])
def test_mlp_maps_vectors_to_logits(shape):
    model = build_model("mlp_si", in_features=40, width=8, num_classes=3)
    assert model(torch.randn(*shape)).shape == (5, 3)


def test_config_rebuilds_the_same_model():
    model = tiny("convnet_si", seed=4, num_classes=5)
    torch.manual_seed(4)
    again = build_model(**model.config)
    assert model.config["name"] == "convnet_si"
    assert again.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())


def zoo_fields() -> list[dataclasses.Field]:
    """The [model] keys of the zoo (``kwargs`` goes to a user factory, model.name=module:attr)."""
    return [f for f in dataclasses.fields(ModelConfig) if f.name != "kwargs"]


@pytest.mark.parametrize(
    ("name", "shape"), [("convnet_si", (1, 16, 16)), ("mlp_af", (40,)), ("mlp_si", (1, 8, 8))]
)
def test_a_model_config_builds_the_model_sized_for_its_data(name, shape):
    cfg = ModelConfig(name=name, width=4, depth=1, head_seed=3, head_norm=5.0)
    model = build_from_config(cfg, shape, num_classes=7)
    hyper = {f.name: getattr(cfg, f.name) for f in zoo_fields()}
    assert model.config == model.config | hyper  # every [model] key reaches the model
    assert model.config["num_classes"] == 7 and model.config["in_features"] == math.prod(shape)
    assert model(torch.randn(2, *shape)).shape == (2, 7)


def test_every_model_config_field_is_a_build_model_keyword_and_a_spec_field():
    keywords = set(inspect.signature(build_model).parameters)
    spec_fields = {f.name for f in dataclasses.fields(ModelSpec)}
    for f in zoo_fields():
        assert f.name in keywords and f.name in spec_fields


def test_model_kwargs_are_refused_for_a_zoo_model():
    cfg = ModelConfig(name="mlp_si", kwargs={"width": 4})
    with pytest.raises(ValueError, match="model.kwargs.*module:attr"):
        build_from_config(cfg, (8,), num_classes=3)


def test_kwargs_a_family_does_not_use_are_ignored():
    model = build_model("resnet18_si", width=2, depth=7, in_features=99)
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_unknown_model_name_lists_the_valid_names():
    with pytest.raises(ValueError, match="convnet_si.*mlp_af"):
        build_model("vgg_si")


def test_mlp_without_in_features_names_the_fix():
    with pytest.raises(ValueError, match="in_features="):
        build_model("mlp_si")


def test_convnet_refuses_images_too_small_for_its_depth():
    with pytest.raises(ValueError, match="image_size=4.*depth"):
        build_model("convnet_si", image_size=4, depth=3)


@pytest.mark.parametrize(
    "kwargs", [{"width": 0}, {"num_classes": -1}, {"depth": 1.5}, {"head_norm": 0.0}]
)
def test_bad_sizes_are_rejected_by_name(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        build_model("convnet_si", **kwargs)


@pytest.mark.parametrize("name", SI_NAMES)
def test_si_head_is_torchs_linear_drawn_at_head_seed_then_scaled_as_the_paper_scales_it(name):
    model = tiny(name, head_seed=228, head_bias=True)
    torch.manual_seed(228)  # the global RNG at a seed draws what a generator at that seed draws
    reference = nn.Linear(model.head.in_features, model.head.out_features)
    weight = reference.weight.detach()
    assert torch.equal(model.head.weight, 10.0 * weight / weight.norm())  # bit for bit
    assert torch.equal(model.head.bias, reference.bias.detach())  # drawn after the weight
    assert not model.head.bias.requires_grad and not model.head.weight.requires_grad


def test_head_bias_false_removes_the_bias_of_an_af_head():
    assert tiny("resnet18_af", head_bias=False).head.bias is None
    assert tiny("resnet18_af").head.bias.requires_grad


def test_paper_depth_style_adds_same_width_convs_within_the_three_stages():
    model = build_model("convnet_si", width=2, depth=5, depth_style="paper")
    convs = [m.out_channels for m in model.features if isinstance(m, nn.Conv2d)]
    pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]
    assert convs == [2, 2, 4, 4, 8, 16] and len(pools) == 3
    assert [m.out_channels for m in build_model("convnet_si", depth=2, depth_style="paper")
            .features if isinstance(m, nn.Conv2d)] == [32, 64, 128]  # fmt: skip
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_paper_depth_style_at_depth_3_is_the_default_network():
    torch.manual_seed(0)
    paper = build_model("convnet_si", width=2, depth_style="paper")
    torch.manual_seed(0)
    stages = build_model("convnet_si", width=2)
    assert paper.state_dict().keys() == stages.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(paper.parameters(), stages.parameters()))


def test_unknown_depth_style_names_the_valid_ones():
    with pytest.raises(ValueError, match="depth_style='deep'.*stages, paper"):
        build_model("convnet_si", depth_style="deep")


@pytest.mark.parametrize("name", ["resnet18_si", "resnet18_af"])
def test_resnet_downsampling_shortcut_is_a_norm_then_a_1x1_conv(name):
    model = tiny(name)
    shortcuts = [b.shortcut for b in model.blocks if b.shortcut is not None]
    assert len(shortcuts) == 3
    for norm, conv in shortcuts:
        assert isinstance(norm, nn.BatchNorm2d) and norm.affine == name.endswith("_af")
        assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.bias is None
