"""The fuzzer behind `make fuzz` tells a clean user error from a crash."""

from fuzz_cli import Case, run_case


def test_a_user_error_passes(tmp_path):
    assert run_case(Case("unknown key", ["train", "--set", "optim.nope=1"]), tmp_path) is None


def test_a_traceback_or_a_wrong_status_is_reported(tmp_path):
    crash = Case("missing sweep", ["report", str(tmp_path / "absent")], allowed=(0,))
    problem = run_case(crash, tmp_path)
    assert problem is not None and "expected (0,)" in problem


def test_a_traceback_is_reported(tmp_path, monkeypatch):
    import sys

    import fuzz_cli

    monkeypatch.setattr(fuzz_cli, "SPHERELAB", [sys.executable, "-c", "raise RuntimeError('x')"])
    problem = run_case(Case("crash", []), tmp_path)
    assert problem is not None and problem.startswith("traceback")
