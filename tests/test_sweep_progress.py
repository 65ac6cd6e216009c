"""A sweep's progress (runs done, failed, running, regimes, ETA) reaches the caller on every
executor, and the CLI shows it as one line on a terminal and as plain lines in a log."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from test_executors import OPTIONS, SPEC, importable_tests  # noqa: F401 - a fixture
from test_sweep import failing_runner

from spherelab.commands.progress import SweepDisplay, sweep_line
from spherelab.lock import LOCK_FILE
from spherelab.sweep.progress import SweepProgress, SweepTracker
from spherelab.sweep.run import run_sweep
from spherelab.sweep.tasks import Outcome


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _states(executor: str, out: Path) -> list[SweepProgress]:
    seen: list[SweepProgress] = []
    run_sweep(
        SPEC,
        out,
        executor=executor,
        runner=failing_runner,
        report=False,
        progress=False,
        executor_options=OPTIONS.get(executor),
        sweep_progress=lambda tracker: seen.append(tracker.snapshot()),
    )
    return seen


@pytest.mark.usefixtures("importable_tests")
@pytest.mark.parametrize(
    "executor",
    [
        "inline",
        "local",
        pytest.param("submitit", marks=pytest.mark.slow),  # ~12 s: a local Slurm stand-in
        pytest.param("ray", marks=pytest.mark.slow),  # ~15 s: starts a Ray cluster
    ],
)
def test_every_executor_reports_each_finished_run_to_the_caller(executor, tmp_path):
    if executor in ("submitit", "ray"):
        pytest.importorskip(executor)  # the slurm / ray extras: `make test-all` installs them
    if executor == "ray":
        import ray  # noqa: PLC0415 - an optional extra

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        seen = _states(executor, tmp_path)
    finally:
        if executor == "ray":
            ray.shutdown()
    assert [s.done for s in seen] == [0, 1, 2]  # the round starts, then every finished run
    assert seen[-1].total == 2 and seen[-1].failed == 1  # failing_runner fails ELR 0.5
    assert sum(seen[-1].regimes.values()) == 1 and seen[-1].running == 0
    assert seen[-1].eta == 0.0 and seen[1].eta is not None and seen[0].eta is None


def test_a_run_counts_as_running_while_its_directory_is_locked(tmp_path):
    clock = iter([0.0, 0.0, 10.0]).__next__
    tracker = SweepTracker(clock)
    dirs = [tmp_path / name for name in "abcd"]
    for d in dirs:
        d.mkdir()
    (dirs[1] / LOCK_FILE).write_text("{}")
    tracker.start_round(str(d) for d in dirs)
    tracker.add(Outcome(str(dirs[0]), {"regime": "convergence"}, None, 1.0))
    state = tracker.snapshot()
    assert (state.total, state.done, state.failed, state.running) == (4, 1, 0, 1)
    assert state.regimes == {"convergence": 1} and state.eta == pytest.approx(30.0)


def test_the_terminal_shows_one_line_redrawn_in_place_and_log_lines_clear_it(tmp_path):
    screen = Terminal()
    handler = logging.StreamHandler(screen)
    logging.getLogger("spherelab").addHandler(handler)
    tracker = SweepTracker()
    tracker.start_round([str(tmp_path / "a"), str(tmp_path / "b")])
    try:
        with SweepDisplay(screen) as display:
            display.sweep(tracker)
            info = {"step": 5, "total": 10, "epoch": 1.0, "records": [{}, {}], "elapsed": 1.0}
            display.train(info)
            logging.getLogger("spherelab").warning("a run failed")
            tracker.add(Outcome(str(tmp_path / "a"), {"regime": "divergence"}, None, 1.0))
            display.sweep(tracker)
    finally:
        logging.getLogger("spherelab").removeHandler(handler)
    text = screen.getvalue()
    assert text.count("\n") == 2  # the log line, and the end of the sweep's line
    assert "pack of 2 runs: 50%" in text and "\r" in text
    before, _, _ = text.partition("a run failed\n")
    assert before.endswith(" \r") and not before.split("\r")[-1]  # the line was blanked first
    assert text.rstrip("\n").split("\r")[-1].startswith("sweep: 1/2 done, 0 failed")
    assert "regimes 3:1" in text


def test_a_log_gets_plain_throttled_lines_and_always_the_last():
    stream = io.StringIO()
    tracker = SweepTracker()
    tracker.start_round(["a", "b", "c"])
    with SweepDisplay(stream, every_s=3600) as display:
        display.sweep(tracker)
        for name in "abc":
            tracker.add(Outcome(name, None, "RuntimeError: x", 0.0))
            display.sweep(tracker)
    lines = stream.getvalue().splitlines()
    assert [line.split(" done")[0] for line in lines] == ["sweep: 0/3", "sweep: 3/3"]
    assert "\r" not in stream.getvalue() and "3 failed" in lines[-1]


def test_the_line_says_the_round_and_numbers_the_regimes():
    state = SweepProgress(1, 4, 2, 0, 2, 20.0, {"divergence": 1, "convergence": 1})
    line = sweep_line(state)
    assert line.startswith("sweep round 1: 2/4 done, 0 failed, 2 running")
    assert "regimes 1:1 3:1" in line and "eta 0m20s" in line
