"""SI discovery on models with Python control flow (traced with torch.export for an example),
keyword arguments, dict/dataclass outputs, normalization subclasses, and the non-SI report."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spherelab.models import build_model
from spherelab.sphere import explain_scale_invariance
from spherelab.sphere.calls import select_output
from spherelab.sphere.check import check_scale_invariance, si_parameters
from spherelab.sphere.graph import NotTraceableError
from spherelab.sphere.recipe import make_scale_invariant
from spherelab.sphere.tracing import trace


class ChannelsFirstLayerNorm(nn.LayerNorm):
    """A LayerNorm subclass with its own forward: permutes NCHW to NHWC and back around it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ScaledBatchNorm(nn.BatchNorm2d):
    """A BatchNorm subclass whose forward does extra work around the normalization."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.contiguous()) * 2.0


@dataclass
class Out:
    logits: torch.Tensor
    features: torch.Tensor


class Checked(nn.Module):
    """A user model with shape checks, an optional argument and a dataclass output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.norm1 = nn.Conv2d(3, 4, 3, padding=1), ChannelsFirstLayerNorm(4)
        self.conv2, self.norm2 = nn.Conv2d(4, 6, 3, padding=1), ScaledBatchNorm(6)
        self.fc = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor, temperature: float | None = None) -> Out:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (N, 3, H, W), got {tuple(x.shape)}")
        h = F.relu(self.norm1(self.conv1(x)))
        h = F.relu(self.norm2(self.conv2(h))).mean(dim=(2, 3))
        logits = self.fc(h)
        if temperature is not None:
            logits = logits / temperature
        return Out(logits=logits, features=h)


class Faulty(nn.Module):
    """Two layers that cannot be SI: one behind a GELU, one added to an unnormalized stream."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.norm = nn.Linear(6, 8), nn.LayerNorm(8)
        self.act_in = nn.Linear(8, 8)
        self.branch = nn.Linear(8, 8)
        self.out_norm, self.head = nn.LayerNorm(8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor, *, extra: torch.Tensor | None = None) -> dict:
        h = self.norm(self.inp(x))
        h = h + self.branch(F.gelu(self.act_in(h)))  # residual stream with no norm before add
        logits = self.head(self.out_norm(h))
        return {"features": h, "logits": logits if extra is None else logits + extra}


def images(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def names(model: nn.Module, params: list[nn.Parameter]) -> list[str]:
    by_id = {id(p): n for n, p in model.named_parameters()}
    return [by_id[id(p)] for p in params]


def test_fx_cannot_trace_shape_checks_so_the_example_is_traced_with_torch_export():
    model = Checked()
    with pytest.raises(NotTraceableError, match="example="):
        trace(model)
    graph = trace(model, images())
    assert graph.method == "torch.export"
    assert graph.layers() == ["conv1", "conv2", "fc"]


def test_zoo_models_keep_the_fast_torch_fx_trace():
    assert trace(build_model("convnet_si"), images()).method == "torch.fx"


def test_si_parameters_follow_permutes_into_norm_subclasses_and_pick_dataclass_logits():
    model = Checked()
    found = si_parameters(model, images())
    assert names(model, found) == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"]
    assert check_scale_invariance(model, images(), found).ok


def test_make_scale_invariant_handles_an_optional_argument_and_a_dataclass_output():
    model = Checked()
    si = make_scale_invariant(model, images())
    assert names(model, si) == ["conv1.weight", "conv2.weight"]
    assert model.conv1.bias is None and model.norm1.weight is None
    assert not model.fc.weight.requires_grad
    result = check_scale_invariance(model, images(), si)
    assert result.ok, str(result)
    scaled = check_scale_invariance(model, (images(), torch.zeros(4)), si, probe_tensors=False)
    assert scaled.ok


def test_keyword_inputs_and_a_named_output_are_checked_numerically():
    model = Faulty().double()
    batch = {"x": torch.randn(5, 6, dtype=torch.float64)}
    params = [model.inp.weight, model.inp.bias]
    assert check_scale_invariance(model, batch, params, output="logits").ok
    branch = check_scale_invariance(model, batch, [model.branch.weight], output="features")
    assert not branch.ok


def test_the_error_names_every_non_si_layer_and_why():
    model = Faulty()
    with pytest.raises(ValueError) as err:
        make_scale_invariant(model, {"x": torch.randn(5, 6)})
    message = str(err.value)
    assert "'act_in.weight' (passes through gelu" in message
    assert "'branch.weight' (feeds the residual stream, no norm before the next add" in message
    assert "4 trainable non-SI parameters" in message and "\n" not in message
    assert model.norm.weight is not None  # nothing changed


def test_explain_reports_si_layers_non_si_parameters_and_the_recipe_verdict():
    report = explain_scale_invariance(Faulty(), {"x": torch.randn(5, 6)})
    assert list(report.si) == ["inp"]
    assert "gelu" in report.not_si["act_in.weight"]
    assert "residual stream" in report.not_si["branch.bias"]
    assert "normalization" in report.not_si["norm.weight"]
    assert report.head == "head" and not report.fully_si_after_recipe
    text = str(report)
    assert "torch.export" in text and "would refuse" in text and "branch.weight" in text
    assert explain_scale_invariance(Checked(), images()).fully_si_after_recipe


def test_select_output_takes_a_key_an_attribute_a_callable_or_the_first_tensor():
    t = torch.ones(2)
    assert select_output({"a": 1, "b": t}) is t
    assert select_output(Out(t, t * 2), "features").equal(t * 2)
    assert select_output((t, None), lambda out: out[0]) is t
    with pytest.raises(ValueError, match="output='nope'.*features"):
        select_output({"features": t}, "nope")


class ManualLayerNorm(nn.LayerNorm):
    """A LayerNorm subclass that computes the normalization itself (decomposed ops)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + self.eps) * self.weight + self.bias


class Reshaped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp, self.norm, self.head = nn.Linear(6, 8), ManualLayerNorm(8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x).view(-1, 2, 4).transpose(1, 2).reshape(-1, 8)
        return self.head(torch.relu(self.norm(h)))


@pytest.mark.parametrize("example", [None, torch.randn(5, 6)], ids=["fx", "export"])
def test_a_norm_subclass_with_its_own_arithmetic_counts_as_a_norm_after_reshapes(example):
    model = Reshaped()
    assert names(model, si_parameters(model, example)) == ["inp.weight", "inp.bias"]
    assert check_scale_invariance(model, torch.randn(5, 6)).ok


class FunctionalLinear(nn.Module):
    """A layer that owns its weight and calls F.linear itself (no nn.Linear)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_out, n_in) / n_in**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


@pytest.mark.parametrize("example", [None, torch.randn(5, 6)], ids=["fx", "export"])
def test_a_module_calling_f_linear_with_its_own_weight_is_a_layer(example):
    model = nn.Sequential(FunctionalLinear(6, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 3))
    assert names(model, si_parameters(model, example)) == ["0.weight"]
