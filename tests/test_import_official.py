"""`spherelab import-official`: the paper's checkpoints, written by the paper's own training
script, become a run directory that diagnose and report read; anything else is refused in one
line with exit status 2."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import pytest
import torch
from _official import OFFICIAL_DIR, load_official
from _official_runs import paper_flags, run_official_training, tiny_loaders

from spherelab.cli import main
from spherelab.official import from_official
from spherelab.official_runs import load_checkpoint

OFFICIAL = Path(os.environ.get("SPHERELAB_OFFICIAL", OFFICIAL_DIR))
DATA = ["--dataset", "synthetic:3x32x32:24:16:10", "--set", "data.batch_size=8"]
needs_official = pytest.mark.skipif(
    not (OFFICIAL / "train.py").is_file(),
    reason=f"the paper's code is not at {OFFICIAL} (set SPHERELAB_OFFICIAL) to write checkpoints",
)


@pytest.fixture(scope="module")
def official_run(tmp_path_factory):
    """checkpoint-0/1/2.pt of a width-2 ConvNet-SI trained by the paper's train.py (ELR 1e-3)."""
    modules = load_official(OFFICIAL)
    out = tmp_path_factory.mktemp("official")
    with contextlib.redirect_stdout(io.StringIO()):  # the paper's script prints its progress
        return run_official_training(modules, paper_flags("ConvNetSI", 2, out), tiny_loaders())


@needs_official
def test_an_official_run_becomes_a_run_directory_that_diagnose_and_report_read(
    official_run, tmp_path, capsys
):
    run = tmp_path / "run"
    assert main(["import-official", str(official_run), "--model", "ConvNetSI",
                 "--out", str(run), *DATA]) == 0  # fmt: skip
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0.0, 1.0, 2.0]
    assert [r["step"] for r in rows] == [0, 3, 6]  # 24 samples in batches of 8
    assert rows[0]["angle_to_init"] == 0.0 < rows[-1]["angle_to_init"]
    assert all(0 <= r["official_train_acc"] <= 1 for r in rows[1:])  # made a fraction
    config = json.loads((run / "config.json").read_text())
    assert config["model"] | {"head_norm": 10.0} == {
        "name": "convnet_si", "width": 2, "depth": 3, "depth_style": "paper",
        "head_bias": True, "head_seed": 228, "head_norm": 10.0, "kwargs": {},
    }  # fmt: skip
    assert config["optim"]["elr"] == pytest.approx(1e-3, rel=1e-6)  # lr / rho0^2
    assert len(config["official"]["checkpoints"]) == 3
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["regime"]
    for epoch, path in ((0, run / "checkpoints/step_000000000.pt"),
                        (2, run / "checkpoints/step_000000006.pt")):  # fmt: skip
        paper = load_checkpoint(official_run / f"checkpoint-{epoch}.pt")["state_dict"]
        ours = torch.load(path, weights_only=True)["model"]
        expected = from_official("ConvNetSI", paper).state_dict()
        assert all(torch.equal(ours[k], v) for k, v in expected.items())

    assert main(["diagnose", str(run), "--what", "grad,angles", "--samples", "16"]) == 0
    assert len((run / "diagnostics.jsonl").read_text().splitlines()) == 3
    assert main(["report", str(run), "--relabel"]) == 0
    assert (run / "report.html").is_file() and (run / "summary.csv").is_file()
    assert "report written to" in capsys.readouterr().out


@needs_official
def test_importing_into_a_directory_that_holds_a_run_is_refused(official_run, tmp_path, capsys):
    run = str(tmp_path / "run")
    args = ["import-official", str(official_run / "checkpoint-2.pt"), "--model", "ConvNetSI",
            "--out", run, *DATA]  # fmt: skip
    assert main(args) == 0
    assert main(args) == 2
    assert "already holds" in capsys.readouterr().err


def _refusal(capsys, path: Path, model: str = "ConvNetSI") -> str:
    args = ["import-official", str(path), "--model", model, "--out", str(path.parent / "run")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    return err


def test_a_file_that_is_no_checkpoint_is_refused_in_one_line(tmp_path, capsys):
    text = tmp_path / "notes.pt"
    text.write_text("not a pickle")
    assert "is not a checkpoint of the paper's code" in _refusal(capsys, text)


def test_a_pickle_of_arbitrary_objects_is_not_unpickled(tmp_path, capsys):
    path = tmp_path / "checkpoint-0.pt"
    torch.save({"state_dict": {}, "payload": Path("anything")}, path)  # a non-allowlisted global
    assert "loads safely" in _refusal(capsys, path)


def test_a_checkpoint_without_a_state_dict_or_of_another_network_is_refused(tmp_path, capsys):
    path = tmp_path / "checkpoint-0.pt"
    torch.save({"epoch": 0}, path)
    assert "holds no 'state_dict'" in _refusal(capsys, path)
    torch.save({"epoch": 0, "state_dict": {"conv1.weight": torch.zeros(2, 3, 3, 3)}}, path)
    assert "--model" in _refusal(capsys, path)


def test_a_directory_without_official_checkpoints_is_refused(tmp_path, capsys):
    (tmp_path / "step_000000000.pt").write_bytes(b"")  # a spherelab name, not the paper's
    assert main(["import-official", str(tmp_path), "--model", "ResNet18SI", "--out",
                 str(tmp_path / "run")]) == 2  # fmt: skip
    assert "holds no checkpoint-<epoch>.pt" in capsys.readouterr().err


def test_from_official_names_the_valid_networks():
    with pytest.raises(ValueError, match="ConvNetSI, ConvNetSIAf, ResNet18SI, ResNet18SIAf"):
        from_official("VGG", {})
