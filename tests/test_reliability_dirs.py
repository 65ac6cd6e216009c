"""Nothing a user does breaks a run or sweep directory: locks, OS errors, failed starts, damaged
checkpoints, strict JSON, file modes and Ctrl-C, each driven through the real CLI."""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from argparse import Namespace
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import spherelab.io
import spherelab.lock
from spherelab.cli import main
from spherelab.lock import LOCK_FILE

TINY = [
    "--model",
    "mlp_si",
    "--dataset",
    "synthetic:20:128",
    "--set",
    "model.width=8",
    "--set",
    "train.records=3",
    "--device",
    "cpu",
    "--elr",
    "1e-2",
]
SWEEP = ["sweep", "--dataset", "synthetic:20:128", "--epochs", "1", "--set", "model.width=8"]
SWEEP += ["--set", "train.records=3", "--set", "train.device=cpu", "--no-report"]


def train(out: Path, *extra: str, steps: int = 3) -> list[str]:
    return ["train", *TINY, "--steps", str(steps), "--out", str(out), *extra]


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def wait_for(path: Path, proc: subprocess.Popen[bytes], seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def hidden_files(root: Path) -> list[Path]:
    """Temporary files of atomic writes (and lock files) left anywhere below root."""
    return [p for p in root.rglob(".*")]


# ---- item 3: one writer per directory -------------------------------------------------------


@contextmanager
def held_elsewhere(directory: Path, command: str) -> Iterator[subprocess.Popen[bytes]]:
    """Another process holding `directory`'s lock (spherelab.lock alone: it imports no torch,
    so this takes milliseconds, not the seconds of a real run)."""
    code = (
        "import importlib.util, sys, time\n"
        f"spec = importlib.util.spec_from_file_location('lock', {spherelab.lock.__file__!r})\n"
        "lock = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(lock)\n"
        f"with lock.hold({str(directory)!r}, {command!r}):\n"
        "    print('held', flush=True)\n    time.sleep(60)\n"
    )
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
            yield holder
        finally:
            holder.kill()
            holder.wait()


def test_a_second_train_or_resume_is_refused_naming_the_holder(tmp_path, capsys):
    out, _ = finished_run(tmp_path)
    (out / "summary.json").unlink()  # an unfinished run, as if it were still training
    with held_elsewhere(out, "train") as holder:
        for extra in ([], ["--resume"]):
            assert main(train(out, *extra)) == 2
            err = error_line(capsys)
            assert f"`spherelab train` (PID {holder.pid} on host {socket.gethostname()}" in err
            assert "wait for it to finish or stop it, or choose another --out" in err
    assert not (out / "summary.json").exists()  # the refused runs wrote nothing
    assert main(train(out, "--resume")) == 0  # the lock went with its process


@pytest.mark.slow  # a real second process trains (~8 s); the test above covers the refusal
def test_a_concurrent_real_train_is_refused_and_its_lock_taken_over_after_kill_9(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "spherelab.cli", *train(out, steps=10**7)]
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as first:
        try:
            wait_for(out / "metrics.jsonl", first)  # started and writing
            for extra in ([], ["--resume"]):
                assert main(train(out, *extra, steps=10**7)) == 2
                err = error_line(capsys)
                assert f"PID {first.pid} on host {socket.gethostname()}" in err, err
                assert "wait for it to finish or stop it, or choose another --out" in err
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
    assert (out / LOCK_FILE).exists()  # kill -9 leaves the lock file behind: a stale lock
    # `diagnose` writes into the run directory, so it takes the lock: the stale one is taken over
    argv = ["diagnose", str(out), "--what", "grad", "--epochs", "last", "--samples", "32"]
    assert main(argv) == 0, capsys.readouterr().err
    assert (out / "diagnostics.jsonl").exists() and not (out / LOCK_FILE).exists()


def test_a_stale_lock_file_of_a_dead_process_is_taken_over(tmp_path, caplog):
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    out = tmp_path / "run"
    out.mkdir()
    holder = {"command": "train", "pid": int(gone.stdout), "host": socket.gethostname()}
    (out / LOCK_FILE).write_text(json.dumps(holder))
    with caplog.at_level("INFO", logger="spherelab"):
        assert main(train(out)) == 0
    assert f"taking over the stale lock of {out} (PID {gone.stdout.strip()}" in caplog.text
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"
    assert not (out / LOCK_FILE).exists()


def test_a_sweep_report_or_diagnose_on_a_directory_in_use_is_refused(tmp_path, capsys):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "summary.csv").write_text("elr,seed\n")
    with held_elsewhere(out, "sweep") as holder:
        for argv in (
            [*SWEEP, "--elrs", "1e-3", "--out", str(out)],
            ["report", str(out)],
            ["diagnose", str(out)],
        ):
            assert main(argv) == 2
            err = error_line(capsys)
            assert f"in use by `spherelab sweep` (PID {holder.pid}" in err, err
    assert not (out / "sweep.json").exists()  # the refused sweep wrote nothing


@pytest.mark.slow  # spawns worker processes (~15 s); inline sweeps cover the lock itself
def test_the_local_executor_trains_under_its_sweep_lock(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = [*SWEEP, "--elrs", "1e-3,1e-2", "--executor", "local", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    assert not hidden_files(out)  # every lock was released


# ---- item 6: OS errors are one line that names the path and the fix ---------------------------


def test_an_out_under_a_file_or_on_a_file_is_one_line_naming_the_fix(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(train(blocker / "run")) == 2
    err = error_line(capsys)
    assert str(blocker) in err and "a part of the path is a file, not a directory" in err
    assert main(train(blocker)) == 2
    err = error_line(capsys)
    assert str(blocker) in err and "File exists; a file is in the way: remove it" in err


def test_a_read_only_out_is_one_line_naming_the_fix(tmp_path, capsys, monkeypatch):
    locked = tmp_path / "ro"
    locked.mkdir()
    if os.geteuid() == 0:  # root writes through chmod: simulate what the kernel would say
        real_open = os.open

        def refuse(path, *args, **kwargs):
            if str(path).startswith(str(locked)):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", refuse)
        refuse_mkdir = Path.mkdir

        def mkdir(self, *args, **kwargs):
            if str(self).startswith(str(locked)):
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return refuse_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", mkdir)
    else:
        locked.chmod(0o555)
    try:
        assert main(train(locked / "run")) == 2
    finally:
        locked.chmod(0o755)
    err = error_line(capsys)
    assert str(locked / "run") in err and "Permission denied; choose a path you may write" in err


def full_disk(monkeypatch, when=lambda target: True):
    """Every atomic write whose target `when` accepts fails as on a full disk."""
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if when(Path(dst)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(spherelab.io.os, "replace", replace)


def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(tmp_path, capsys, monkeypatch):
    full_disk(monkeypatch)
    assert main(train(tmp_path / "run")) == 2
    err = error_line(capsys)
    assert "No space left on device; free some space or write somewhere else" in err
    assert not hidden_files(tmp_path)


def test_a_full_disk_inside_a_sweep_fails_that_run_only(tmp_path, capsys, monkeypatch):
    full_disk(monkeypatch, when=lambda target: target.name.startswith("step_"))
    out = tmp_path / "sweep"
    assert main([*SWEEP, "--elrs", "1e-3", "--pack", "1", "--out", str(out)]) == 1
    (row,) = spherelab.io.read_csv(out / "summary.csv")
    assert row["status"] == "failed"
    assert row["error"].startswith("OSError: ") and "free some space" in row["error"]
    assert not hidden_files(out)


def finished_run(tmp_path: Path) -> tuple[Path, dict]:
    out = tmp_path / "run"
    assert main(train(out)) == 0
    return out, json.loads((out / "summary.json").read_text())


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    out, full = finished_run(tmp_path)
    (out / "summary.json").unlink()  # as if killed before the end
    newest = sorted((out / "checkpoints").glob("step_*.pt"))[-1]
    newest.write_bytes(newest.read_bytes()[:100])
    assert main(train(out, "--resume")) == 0
    assert f"{newest} is not a readable spherelab checkpoint" in caplog.text
    assert "resuming from step 2 instead" in caplog.text
    resumed = json.loads((out / "summary.json").read_text())
    assert resumed["train_loss"] == full["train_loss"]  # the fallback resumes exactly


def test_with_no_readable_checkpoint_the_error_names_the_newest_file(tmp_path, capsys):
    out, _ = finished_run(tmp_path)
    (out / "summary.json").unlink()
    paths = sorted((out / "checkpoints").glob("step_*.pt"))
    for path in paths:
        path.write_bytes(b"garbage")
    assert main(train(out, "--resume")) == 2
    err = error_line(capsys)
    assert f"no readable checkpoint to resume from: {paths[-1]} and every earlier one" in err
    assert f"delete {out / 'checkpoints'} to start afresh" in err


@pytest.mark.parametrize("command", ["resume", "diagnose"])
def test_a_foreign_pickle_is_not_a_spherelab_checkpoint_and_never_advises_unsafe_loading(
    tmp_path, capsys, command
):
    out, _ = finished_run(tmp_path)
    for path in (out / "checkpoints").glob("*.pt"):
        path.write_bytes(pickle.dumps(Namespace(model="not tensors")))
    if command == "resume":
        (out / "summary.json").unlink()
        argv = train(out, "--resume")
    else:
        argv = ["diagnose", str(out), "--what", "grad", "--epochs", "last", "--samples", "32"]
    assert main(argv) == 2
    err = error_line(capsys)
    assert "not a readable spherelab checkpoint" in err or "not readable spherelab" in err
    assert "weights_only" not in err


# ---- item 7: nothing written before validation; a failed start does not block its rerun -------


def test_a_run_that_fails_before_writing_leaves_no_directory(tmp_path, capsys):
    out = tmp_path / "new" / "run"
    argv = ["train", *TINY, "--dataset", f"npz:{tmp_path / 'missing.npz'}", "--out", str(out)]
    assert main(argv) == 2
    assert not (tmp_path / "new").exists()
    assert main([*SWEEP, "--elrs", "1e-3", "--set", "optim.nope=1", "--out", str(out)]) == 2
    assert not (tmp_path / "new").exists()


def test_a_run_that_failed_before_its_first_step_can_be_rerun_with_another_config(
    tmp_path, monkeypatch
):
    out = tmp_path / "run"

    def broken(*args, **kwargs):
        raise RuntimeError("the model broke at its first step")

    with monkeypatch.context() as patch:
        patch.setattr("spherelab.train.loop.next_batch", broken)
        with pytest.raises(RuntimeError, match="first step"):
            main(train(out))
    assert (out / "config.json").exists() and (out / "checkpoints" / "init.pt").exists()
    assert main(train(out, "--set", "model.width=16")) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"]["width"] == 16
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"


# ---- item 9 --------------------------------------------------------------------------------


def _no_constants(name: str) -> float:
    raise ValueError(f"bare {name} is not JSON")


def test_run_files_are_strict_json_with_non_finite_values_listed(tmp_path):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--elr", "1e300", "--dtype", "float64", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text(), parse_constant=_no_constants)
    assert summary["status"] == "nonfinite" and summary["train_loss"] is None
    assert summary["nonfinite_values"]["train_loss"] == "nan"
    rows = [
        json.loads(line, parse_constant=_no_constants)
        for line in (out / "metrics.jsonl").read_text().splitlines()
    ]
    assert any("nonfinite_values" in row for row in rows)
    # spherelab's own readers give the floats back
    assert spherelab.io.read_jsonl(out / "metrics.jsonl")[-1]["train_loss"] != 0.0


def test_ctrl_c_names_a_fix_each_command_has(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("spherelab.commands.sweep.run_sweep", interrupted)
    assert main([*SWEEP, "--elrs", "1e-3", "--out", str(tmp_path / "s")]) == 130
    err = capsys.readouterr().err
    assert "--resume" not in err and "rerun the same command" in err and "skipped" in err
    monkeypatch.setattr("spherelab.commands.train.train_run", interrupted)
    assert main(train(tmp_path / "r")) == 130
    assert "--resume" in capsys.readouterr().err


def test_run_files_get_the_modes_of_plain_files(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    if umask != 0o022:
        pytest.skip(f"the modes below assume umask 022; this process has {umask:03o}")
    out, _ = finished_run(tmp_path)
    for path in [out, *out.rglob("*")]:
        mode = path.stat().st_mode & 0o777
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))
