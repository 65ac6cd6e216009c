"""`--preset paper`: every default becomes the paper's run script's, under files, flags and --set."""

import json

import pytest

from spherelab.cli import build_parser, main
from spherelab.commands.sweep import spec_from_args
from spherelab.config import PRESET_ELRS, PRESETS, layered_config
from spherelab.train.checkpoints import record_steps

# A CIFAR-shaped stand-in (CIFAR-10 itself is not on this machine), 3 steps per epoch.
TINY = ["--dataset", "synthetic:3x32x32:96:32:10", "--epochs", "3", "--set", "model.width=4"]


def test_a_preset_run_carries_the_papers_settings_and_records_every_epoch(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--preset", "paper", *TINY, "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["name"] == "convnet_si" and cfg["model"]["head_bias"] is True
    assert (cfg["model"]["head_seed"], cfg["model"]["depth_style"]) == (228, "paper")
    assert cfg["train"]["seed"] == 1 and cfg["data"]["normalize"] == "paper"
    assert (cfg["data"]["batch_size"], cfg["data"]["augment"]) == (128, False)
    assert cfg["model"]["width"] == 4 and cfg["train"]["epochs"] == 3  # flags win
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0.0, 1.0, 2.0, 3.0]


def test_layers_are_preset_then_file_then_flags(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[train]\nseed = 7\n[model]\nname = 'resnet18_si'\n")
    cfg = layered_config("paper", path, {"optim.elr": 2e-3})
    assert (cfg.train.seed, cfg.optim.elr, cfg.data.normalize) == (7, 2e-3, "paper")
    assert cfg.model.head_bias is False  # the paper's ResNets have no head bias
    cfg = layered_config("paper", None, {"model.head_bias": False})
    assert cfg.model.name == "convnet_si" and cfg.model.head_bias is False  # set wins
    plain = layered_config(None, None, {})
    assert plain.train.seed == 0 and plain.model.head_bias is None


def _spec(*argv):
    return spec_from_args(build_parser().parse_args(["sweep", *argv, "--out", "unused"]))


def test_a_preset_sweep_gets_figure_1s_grid_and_the_papers_run():
    spec = _spec("--preset", "paper")
    assert spec.elrs == PRESET_ELRS["paper"] == (1e-5, 1e-4, 5e-4, 1e-3, 2e-3, 5e-3, 5e-2, 1e-1)
    assert (spec.model, spec.dataset, spec.epochs, spec.seeds) == (
        "convnet_si",
        "cifar10",
        1000,
        (1,),
    )
    assert spec.overrides["model.head_bias"] is True
    assert spec.overrides["train.record_schedule"] == "epoch"
    assert {k for k in PRESETS["paper"]} - set(spec.overrides) == {
        "model.name",
        "data.name",
        "train.epochs",
        "train.seed",
    }
    spec = _spec("--preset", "paper", "--model", "resnet18_si", "--elrs", "1e-3", "--seeds", "2")
    assert (spec.elrs, spec.seeds, spec.overrides["model.head_bias"]) == ((1e-3,), (2,), False)


def test_preset_with_a_spec_file_or_an_unknown_preset_exits_2(tmp_path, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text("elrs = [1e-3]\n")
    argv = ["sweep", "--preset", "paper", "--spec", str(spec), "--out", str(tmp_path / "s")]
    assert main(argv) == 2
    assert "do not combine" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
    with pytest.raises(SystemExit) as err:
        main(["train", "--preset", "papr", "--out", str(tmp_path / "r")])
    assert err.value.code == 2


@pytest.mark.parametrize("total, spe", [(12, 4), (10, 4), (3, 4)])
def test_the_epoch_record_schedule_records_every_epoch_end_and_the_last_step(total, spe):
    steps = record_steps(total, spe, 5, "epoch")
    assert steps == sorted({0, total, *range(spe, total, spe)})
