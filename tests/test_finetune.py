"""Pre-train / fine-tune grid: branches start from the pre-training checkpoint; table; baseline."""

import csv
import json

import pytest
import torch

from spherelab.config import from_dict
from spherelab.io import read_jsonl
from spherelab.sphere.check import si_parameters
from spherelab.studies.finetune import analyse, run_finetune
from spherelab.train import build_run
from spherelab.train import checkpoints as ckpt

SETS = ["model.width=8", "data.batch_size=32", "train.records=3", "train.eval_batch_size=64"]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    from spherelab.cli import main

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ft") / "grid"
    argv = [
        "finetune",
        "--model",
        "mlp_si",
        "--dataset",
        "synthetic:12:96:48:3",
        "--pretrain-elrs",
        "1e-3,3e-1",
        "--finetune-elrs",
        "1e-3,1e-2",
        "--pre-epochs",
        "2",
        "--ft-epochs",
        "1",
        "--out",
        str(out),
    ]
    for s in SETS:
        argv += ["--set", s]
    assert main(argv) == 0
    return out


def _rows(out):
    with (out / "summary.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_every_fine_tune_branch_starts_exactly_from_its_pretraining_checkpoint(grid):
    for row in _rows(grid):
        branch = grid / row["run_dir"]
        config = json.loads((branch / "config.json").read_text())
        source = grid / "runs" / "pretrain" / "runs"
        pre_dir = next(
            d
            for d in source.iterdir()
            if json.loads((d / "config.json").read_text())["optim"]["elr"]
            == float(row["pretrain_elr"])
        )
        last = ckpt.list_checkpoints(pre_dir)[-1]
        assert config["train"]["init_from"] == str(last)
        pre_weights = ckpt.load_checkpoint(last)["model"]
        branch_init = ckpt.load_init(branch)
        model = build_run(from_dict(config)).model
        si_ids = {id(p) for p in si_parameters(model)}
        names = [n for n, p in model.named_parameters() if id(p) in si_ids]
        assert len(names) == len(branch_init) > 0
        assert all(torch.equal(a, pre_weights[n]) for a, n in zip(branch_init, names))
        first = read_jsonl(branch / "metrics.jsonl")[0]
        final = read_jsonl(pre_dir / "metrics.jsonl")[-1]
        # same weights, same batches; the pre-training runs may be packed (an ensemble sums
        # in another order), so equal up to float32 rounding
        assert first["train_loss"] == pytest.approx(final["train_loss"], rel=1e-5)
        assert config["optim"]["elr"] == float(row["finetune_elr"])


def test_the_table_has_one_row_per_branch_and_the_json_names_the_best(grid):
    rows = _rows(grid)
    assert {(float(r["pretrain_elr"]), float(r["finetune_elr"])) for r in rows} == {
        (p, f) for p in (1e-3, 3e-1) for f in (1e-3, 1e-2)
    }
    result = json.loads((grid / "finetune.json").read_text())
    best = max(rows, key=lambda r: float(r["finetune_test_acc"]))
    assert result["best_finetune_test_acc"] == pytest.approx(float(best["finetune_test_acc"]))
    assert result["best_pretrain_regime"] == next(
        r["pretrain_regime"]
        for r in rows
        if float(r["pretrain_elr"]) == result["best_pretrain_elr"]
    )
    base = result["scratch_baseline"]
    scratch = json.loads(
        next((grid / "runs" / "scratch" / "runs").glob("*/summary.json")).read_text()
    )
    assert scratch["epoch"] == 3  # pre + fine-tune epochs
    assert result["gain_over_scratch"] == pytest.approx(
        result["best_finetune_test_acc"] - base["test_acc"]
    )


def test_heatmap_figures_and_report_are_written(grid):
    for name in ("heatmap.png", "heatmap.svg", "comparison.png", "comparison.svg"):
        assert (grid / "figures" / name).stat().st_size > 0
    assert "Pre-training runs" in (grid / "report.html").read_text()


def _row(p, f, acc, regime="chaotic_equilibrium"):
    return {
        "pretrain_elr": p,
        "finetune_elr": f,
        "seed": 0,
        "pretrain_regime": regime,
        "pretrain_test_acc": 0.5,
        "finetune_test_acc": acc,
    }


def test_analysis_prefers_a_regime_1_scratch_baseline_over_a_better_other_run():
    rows = [
        _row(1e-3, 1e-4, 0.80, "convergence"),
        _row(1e-3, 5e-4, 0.82, "convergence"),
        _row(5e-3, 1e-4, 0.85),
        _row(5e-3, 5e-4, 0.84),
    ]
    scratch = [
        {"elr": 1e-4, "seed": 0, "regime": "convergence", "test_acc": 0.79},
        {"elr": 5e-4, "seed": 0, "regime": "chaotic_equilibrium", "test_acc": 0.90},
    ]
    result = analyse(rows, scratch)
    assert result["best_pretrain_elr"] == 5e-3
    assert result["best_pretrain_regime"] == "chaotic_equilibrium"
    assert result["best_finetune_elr"] == 1e-4
    assert result["scratch_baseline"]["elr"] == 1e-4 and result["scratch_baseline"]["regime1_found"]
    assert result["gain_over_scratch"] == pytest.approx(0.85 - 0.79)


def test_seeds_are_averaged_before_choosing_the_best():
    rows = [_row(1e-3, 1e-4, 0.9), {**_row(1e-3, 1e-4, 0.5), "seed": 1}, _row(2e-3, 1e-4, 0.8)]
    assert analyse(rows, [])["best_pretrain_elr"] == 2e-3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"ft_epochs": 0}, "ft_epochs"),
        ({"overrides": {"optim.mode": "conventional"}}, "optim.mode"),
        ({"overrides": {"train.checkpoints": "none"}}, "checkpoint"),
    ],
)
def test_bad_inputs_are_refused_before_anything_runs(tmp_path, kwargs, match):
    args = {"pre_epochs": 1, "ft_epochs": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        run_finetune("mlp_si", "synthetic:12:32:16:3", [1e-3], [1e-3], out=tmp_path, **args)
    assert not (tmp_path / "runs").exists()


def test_every_branch_is_labelled_against_its_pretraining_runs_init(grid):
    for row in _rows(grid):
        summary = json.loads((grid / row["run_dir"] / "summary.json").read_text())
        pre = next((grid / "runs" / "pretrain" / "runs").glob("*/metrics.jsonl"))
        assert summary["regime_origin"] == "found", summary["regime_reason"]
        assert summary["regime_stats"]["init_loss"] == read_jsonl(pre)[0]["train_loss"]
