"""User models and data in the CLI: `--model module:factory` with `model.kwargs`, `--dataset
module:loader`, one-line errors (exit 2) and a third-party ResNet swept over 3 ELRs."""

from __future__ import annotations

import csv
import itertools
import json
import logging
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from spherelab.cli import main
from spherelab.config import Config, ConfigError, apply_overrides, from_dict, load_config
from spherelab.data import load_dataset
from spherelab.models import build_from_config
from spherelab.runtime import import_object, is_import_spec

NETS = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, width, num_classes, in_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1)
        self.norm = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x, temperature=None):
        if x.dim() != 4:
            raise ValueError("expected images")
        h = torch.relu(self.norm(self.conv(x))).mean(dim=(2, 3))
        out = self.fc(h)
        return {"logits": out if temperature is None else out / temperature}


def make_net(width=4, num_classes=10, in_channels=3):
    return Net(width, num_classes, in_channels)


def broken(width=4):
    raise RuntimeError("no GPU here")


def unnormalized(num_classes=10, in_features=1):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, 8), nn.ReLU(),
                         nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, num_classes))


class Liar(nn.Sequential):
    def si_parameters(self):
        return [self[1].weight]


def liar(num_classes=10, in_features=1):
    return Liar(nn.Flatten(), nn.Linear(in_features, num_classes))


def zoo(num_classes=10, in_channels=3, image_size=32):
    from spherelab.models import build_model
    return build_model("convnet_si", num_classes=num_classes, in_channels=in_channels,
                       image_size=image_size, width=4)


def hf_resnet(num_classes=10, in_channels=3, width=8):
    from transformers import ResNetConfig, ResNetForImageClassification
    config = ResNetConfig(num_channels=in_channels, embedding_size=width,
                          hidden_sizes=[width, 2 * width], depths=[1, 1], layer_type="basic",
                          num_labels=num_classes)
    return ResNetForImageClassification(config)
"""

DATA = """
import torch
from torch.utils.data import TensorDataset


def _draw(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 6, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def tensors():
    return (*_draw(24, 0), *_draw(12, 1))


def datasets():
    return TensorDataset(*_draw(24, 0)), TensorDataset(*_draw(12, 1))


def bad():
    return "not data"
"""


_PACKAGES = itertools.count()


@pytest.fixture
def user_pkg(tmp_path, monkeypatch):
    """A package `<name>` with nets.py and data.py in tmp_path, importable from the cwd."""
    name = f"userpkg{next(_PACKAGES)}"  # a fresh module name: sys.modules caches the last one
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(textwrap.dedent(NETS))
    (pkg / "data.py").write_text(textwrap.dedent(DATA))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    return name


def run_cli(*argv: str) -> int:
    return main(list(argv))


def test_import_specs_are_module_attr_and_never_npz_or_synthetic():
    assert is_import_spec("my_pkg.nets:make_net") and is_import_spec("m:f")
    assert not is_import_spec("npz:data") and not is_import_spec("synthetic:3x8x8:10")
    assert not is_import_spec("convnet_si") and not is_import_spec("npz:/a/b.npz")


def test_a_factory_in_the_current_directory_is_imported(user_pkg):
    assert callable(import_object(f"{user_pkg}.nets:make_net", "model"))


def test_train_builds_a_user_factory_with_kwargs_makes_it_si_and_trains(user_pkg, tmp_path):
    out = tmp_path / "run"
    rc = run_cli(
        "train", "--model", f"{user_pkg}.nets:make_net", "--set", "model.kwargs.width=6",
        "--dataset", f"{user_pkg}.data:tensors", "--steps", "3", "--batch-size", "8",
        "--device", "cpu", "--out", str(out),
    )  # fmt: skip
    assert rc == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["kwargs"] == {"width": 6}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished"


def test_a_user_model_is_made_si_and_declares_its_weights_by_name(user_pkg):
    cfg = apply_overrides(Config(), {"model.name": f"{user_pkg}.nets:make_net"})
    cfg = apply_overrides(cfg, {"model.kwargs.width": 5})
    torch.manual_seed(0)
    model = build_from_config(cfg.model, (3, 6, 6), 3)
    assert model.si_names == ["net.conv.weight"]
    assert model.net.conv.weight.shape[0] == 5 and model.net.conv.bias is None
    assert not model.net.fc.weight.requires_grad
    logits = model(torch.randn(4, 3, 6, 6))
    assert isinstance(logits, torch.Tensor) and logits.shape == (4, 3)  # the dict's logits


def test_a_model_that_declares_its_si_weights_is_used_as_declared(user_pkg):
    cfg = apply_overrides(Config(), {"model.name": f"{user_pkg}.nets:zoo"})
    model = build_from_config(cfg.model, (3, 8, 8), 3)
    declared = {f"net.{n}" for n, p in model.net.named_parameters() if p.requires_grad}
    assert set(model.si_names) == declared and model(torch.randn(2, 3, 8, 8)).shape == (2, 3)


@pytest.mark.parametrize("loader", ["tensors", "datasets"])
def test_a_user_loader_returns_tensors_or_torch_datasets(user_pkg, loader):
    data = load_dataset(f"{user_pkg}.data:{loader}", normalize=False)
    assert (data.n_train, data.n_test, data.num_classes, data.input_shape) == (24, 12, 3, (3, 6, 6))
    x, _ = TensorDataset(*import_object(f"{user_pkg}.data:tensors", "d")()[:2])[0]
    assert torch.equal(data.x_train[0], x)


@pytest.mark.parametrize(
    ("model", "dataset", "message"),
    [
        ("no_such_pkg.nets:make", "synthetic", "cannot import 'no_such_pkg.nets'"),
        ("{pkg}.nets:nope", "synthetic", "has no attribute 'nope'"),
        ("{pkg}.nets:broken", "synthetic", "raised RuntimeError: no GPU here"),
        ("{pkg}.nets:unnormalized", "synthetic", "cannot make Sequential fully scale-invariant"),
        ("{pkg}.nets:liar", "synthetic", "is not scale-invariant in its declared weights"),
        ("{pkg}.nets:make_net", "{pkg}.data:bad", "returned str"),
    ],
)
def test_bad_user_code_gives_a_one_line_error_and_exit_2(user_pkg, tmp_path, capsys, model,
                                                         dataset, message):  # fmt: skip
    for command in ("train", "sweep"):
        args = ["--model", model.format(pkg=user_pkg), "--dataset", dataset.format(pkg=user_pkg)]
        args += ["--out", str(tmp_path / command), "--set", "data.train_subset=16"]
        extra = ["--steps", "1"] if command == "train" else ["--elrs", "1e-3", "--epochs", "1"]
        assert run_cli(command, *args, *extra) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"spherelab {command}: error:") and message in err
        assert len(err.splitlines()) == 1


def test_sweep_of_a_third_party_resnet_over_three_elrs_packs_nothing_and_says_so_once(
    user_pkg, tmp_path, caplog
):
    pytest.importorskip("transformers")
    out = tmp_path / "sweep"
    with caplog.at_level(logging.WARNING, logger="spherelab"):
        rc = run_cli(
            "sweep", "--model", f"{user_pkg}.nets:hf_resnet", "--set", "model.kwargs.width=4",
            "--dataset", f"{user_pkg}.data:tensors", "--elrs", "1e-3,1e-2,1e-1",
            "--set", "train.steps=2", "--set", "data.batch_size=8", "--set", "train.device=cpu",
            "--set", "train.records=2", "--pack", "3", "--no-report", "--out", str(out),
        )  # fmt: skip
    assert rc == 0
    with (out / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(float(r["elr"]) for r in rows) == [1e-3, 1e-2, 1e-1]
    assert {r["status"] for r in rows} == {"finished"}
    said = [r for r in caplog.records if "cannot share one ensemble module" in r.getMessage()]
    assert len(said) == 1 and "3 runs" in said[0].getMessage()
    state = torch.load(next(Path(out).glob("runs/*/checkpoints/*.pt")), weights_only=True)
    weights = state["model"] if "model" in state else state
    assert not any("normalization.weight" in k for k in weights)  # BN affines removed: SI


def test_model_kwargs_come_from_a_toml_table_or_dotted_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[model]\nname = "pkg.nets:make"\n[model.kwargs]\nwidth = 3\nact = "relu"\n')
    cfg = load_config(path)
    assert cfg.model.kwargs == {"width": 3, "act": "relu"}
    cfg = apply_overrides(cfg, {"model.kwargs.width": 64, "model.kwargs.depth": 2})
    assert cfg.model.kwargs == {"width": 64, "act": "relu", "depth": 2}
    assert from_dict(json.loads(json.dumps(cfg.to_dict()))).model == cfg.model
    with pytest.raises(ConfigError, match="model.kwargs=3 should be a table"):
        apply_overrides(cfg, {"model.kwargs": 3})
