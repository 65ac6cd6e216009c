"""The `spherelab` command: every subcommand is wired, and bad input exits 2 with one line."""

import json
import subprocess
import sys

import pytest

from spherelab.cli import COMMANDS, build_parser, main

TINY = [
    "--model",
    "mlp_si",
    "--dataset",
    "synthetic:20:128",
    "--epochs",
    "2",
    "--set",
    "model.width=8",
    "--set",
    "train.records=3",
    "--device",
    "cpu",
]


def test_every_documented_command_has_a_parser():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)


def test_train_writes_a_run_and_prints_its_summary(tmp_path, capsys):
    assert main(["train", *TINY, "--elr", "1e-2", "--out", str(tmp_path / "r")]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert "run written to" in capsys.readouterr().out


def test_report_of_a_run_directory_reports_it_as_a_sweep_of_one(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", *TINY, "--elr", "1e-2", "--out", str(run)]) == 0
    assert main(["report", str(run), "--relabel"]) == 0
    rows = (run / "summary.csv").read_text().splitlines()
    assert len(rows) == 2 and ",.," in rows[1]  # one row, run_dir "."
    assert (run / "report.html").is_file() and (run / "boundaries.json").is_file()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no summary.csv" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--model", "vgg"], "mlp_si"),  # lists the valid names
        (["--dataset", "imagenet"], "fashion_mnist"),
        (["--elr", "0"], "must be > 0"),
        (["--elr", "-1"], "must be > 0"),
        (["--set", "optim.elrr=1"], "valid keys"),
        (["--set", "optim.elr"], "section.key=value"),
        (["--dtype", "float64", "--set", "train.device=tpu"], "device"),
        (["--set", "data.subset=last"], "random, first"),
        (["--set", "data.label_noise_style=uniform"], "exact, paper"),
        (["--set", "data.normalize=global"], "split, paper, none"),
        (["--set", "data.augment_pad=wrap"], "reflect, zeros"),
        (["--set", "data.normalize=paper"], "'paper'"),  # the data here are not RGB images
    ],
)
def test_bad_input_exits_2_with_one_line_naming_the_fix(tmp_path, capsys, args, needle):
    argv = ["train", *TINY, "--elr", "1e-2", "--out", str(tmp_path / "r"), *args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_a_bad_pack_value_exits_2_naming_auto(tmp_path, capsys):
    argv = ["sweep", "--elrs", "1e-3", "--pack", "many", "--out", str(tmp_path / "s")]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "neither a number of runs nor 'auto'" in capsys.readouterr().err


def test_missing_data_files_say_how_to_get_them(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SPHERELAB_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("HOME", str(tmp_path))
    argv = [
        "train",
        *TINY[:2],
        "--dataset",
        "cifar10",
        "--elr",
        "1e-2",
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "r"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "download" in err and len(err.strip().splitlines()) == 1


def test_broken_config_file_is_named(tmp_path, capsys):
    bad = tmp_path / "run.toml"
    bad.write_text("[optim\nelr = 1")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "run.toml" in capsys.readouterr().err


def test_config_file_values_are_used_and_flags_override_them(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        '[model]\nname = "mlp_si"\nwidth = 8\n[data]\nname = "synthetic:20:128"\n'
        '[optim]\nelr = 0.05\n[train]\nepochs = 1\nrecords = 2\ndevice = "cpu"\n'
    )
    assert main(["train", "--config", str(cfg), "--elr", "0.02", "--out", str(tmp_path / "r")]) == 0
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["optim"]["elr"] == 0.02 and saved["model"]["width"] == 8


def test_out_directory_with_a_different_run_is_refused(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert main(["train", *TINY, "--elr", "1e-2", "--out", out]) == 0
    assert main(["train", *TINY, "--elr", "2e-2", "--out", out]) == 2
    assert "different run" in capsys.readouterr().err


def test_console_script_entry_point_runs():
    done = subprocess.run(
        [sys.executable, "-m", "spherelab.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "sweep" in done.stdout


def test_progress_bar_draws_on_a_terminal_and_stays_silent_otherwise():
    import io

    from spherelab.commands.progress import progress_bar

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert progress_bar(stream=io.StringIO()) is None
    screen = Terminal()
    show = progress_bar(stream=screen)
    record = {"train_loss": 0.5, "test_acc": 0.8}
    show({"step": 5, "total": 10, "epoch": 1.0, "record": record, "elapsed": 2.0})
    show({"step": 10, "total": 10, "epoch": 2.0, "record": record, "elapsed": 4.0})
    text = screen.getvalue()
    assert "50.0%" in text and "100.0%" in text and text.endswith("\n")
