"""SI discovery on Hugging Face transformers models built from tiny configs (no download):
a residual CNN with BatchNorm (ResNet), a network with LayerNorm subclasses (ConvNeXt) and a
post-LN transformer encoder (BERT). What "SI" honestly means for each is in docs/your_model.md."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from spherelab.sphere import (
    check_scale_invariance,
    explain_scale_invariance,
    make_scale_invariant,
    si_parameters,
)

transformers = pytest.importorskip("transformers")


def hf_resnet() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.ResNetConfig(
        num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
        layer_type="basic", num_labels=5,
    )  # fmt: skip
    return transformers.ResNetForImageClassification(config)


def hf_convnext() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.ConvNextConfig(
        num_channels=3, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=5,
        patch_size=2,
    )  # fmt: skip
    return transformers.ConvNextForImageClassification(config)


def hf_bert() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16,
    )  # fmt: skip
    return transformers.BertModel(config)


def images() -> torch.Tensor:
    return torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def names(model: nn.Module, params: list[nn.Parameter]) -> set[str]:
    by_id = {id(p): n for n, p in model.named_parameters()}
    return {by_id[id(p)] for p in params}


def test_hf_resnet_becomes_fully_si_and_tracing_leaves_its_buffers_alone():
    model = hf_resnet()
    buffers = [b.clone() for b in model.buffers()]
    si = make_scale_invariant(model, images())
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers()))
    convs = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert names(model, si) == convs
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == convs  # fully SI: BN affines gone, classifier frozen
    result = check_scale_invariance(model, images(), si)
    assert result.ok, str(result)
    assert not model.classifier[1].weight.requires_grad


def test_hf_convnext_si_weights_pass_the_check_and_the_recipe_names_each_non_si_layer():
    model = hf_convnext()
    found = names(model, si_parameters(model, images()))
    stem, dw0 = "convnext.embeddings.patch_embeddings", "convnext.encoder.stages.0.layers.0.dwconv"
    assert found == {f"{stem}.weight", f"{stem}.bias", f"{dw0}.weight", f"{dw0}.bias"}
    assert check_scale_invariance(model, images()).ok
    with pytest.raises(ValueError) as err:
        make_scale_invariant(model, images())
    message = str(err.value)
    assert "stages.0.layers.0.pwconv1.weight' (passes through gelu" in message
    assert "stages.0.layers.0.pwconv2.weight' (feeds the residual stream" in message
    assert "stages.1.layers.0.pwconv2" not in message  # a downsample conv scales that stream


def test_hf_convnext_is_fully_si_once_its_mlp_inputs_and_layer_scales_are_frozen():
    model = hf_convnext()
    for name, param in model.named_parameters():
        if "pwconv1" in name or "layer_scale" in name or "stages.0.layers.0.pwconv2" in name:
            param.requires_grad_(False)
    si = make_scale_invariant(model, images())
    assert "convnext.encoder.stages.1.layers.0.pwconv2.weight" in names(model, si)
    result = check_scale_invariance(model, images(), si)
    assert result.ok, str(result)


def test_hf_bert_post_ln_encoder_is_si_in_its_embedding_tables_only():
    model = hf_bert()
    inputs = {"input_ids": torch.randint(0, 50, (4, 8), generator=torch.Generator())}
    si = si_parameters(model, inputs, output="last_hidden_state")
    assert names(model, si) == {
        f"embeddings.{kind}_embeddings.weight" for kind in ("word", "position", "token_type")
    }
    assert check_scale_invariance(model, inputs, si, output="last_hidden_state").ok
    residual = model.encoder.layer[0].attention.output.dense.weight  # writes the residual stream
    assert not check_scale_invariance(model, inputs, [residual], output="last_hidden_state").ok
    report = explain_scale_invariance(model, inputs, output="last_hidden_state")
    reason = report.not_si["encoder.layer.0.attention.self.query.weight"]
    assert "attention scores" in reason


def test_the_python_example_of_docs_your_model_runs(capsys):
    text = (Path(__file__).resolve().parents[1] / "docs" / "your_model.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "docs/your_model.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "make_scale_invariant makes it fully SI" in printed
    assert "scale invariance OK" in printed
