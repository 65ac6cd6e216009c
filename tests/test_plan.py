"""`spherelab sweep --plan`: runs, packs, jobs and an estimate, with nothing written; the
calibration file round-trips and a bad one is refused in one line."""

from __future__ import annotations

import json

import pytest
from test_sweep import fake_runner

from spherelab.cli import main
from spherelab.sweep.calibration import (
    Calibration,
    Speed,
    read_calibration,
    run_kind,
    write_calibration,
)
from spherelab.sweep.plan import describe, plan_sweep
from spherelab.sweep.run import run_sweep
from spherelab.sweep.spec import SweepSpec, expand

TINY = {"model.width": 8, "train.records": 3, "train.device": "cpu"}
SPEC = SweepSpec(
    dataset="synthetic:20:128", elrs=(1e-3, 1e-2, 0.1), seeds=(0, 1), epochs=2, overrides=TINY
)
ARGS = [
    "sweep", "--dataset", "synthetic:20:128", "--elrs", "1e-3,1e-2,0.1", "--seeds", "0,1",
    "--epochs", "2", "--set", "model.width=8", "--set", "train.records=3",
    "--set", "train.device=cpu",
]  # fmt: skip


def _calibration(spec: SweepSpec, step_s: float = 0.01, record_s: float = 0.0) -> Calibration:
    kind = run_kind(expand(spec)[0].config)
    speed = Speed(kind, "mlp_si", 4, {1: 1 / step_s, 3: 0.5 / step_s}, {1: record_s, 3: record_s})
    return Calibration("cpu", "test cpu", 1, "x", {kind: speed})


def test_the_plan_lists_every_run_and_pack_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main([*ARGS, "--out", str(out), "--pack", "3", "--plan", "--refine", "1"]) == 0
    text = capsys.readouterr().out
    for point in expand(SPEC):
        assert point.run_dir in text
    assert "packs: 2" in text and text.count("  pack ") == 2
    assert "inline: this process trains the 2 pack(s)" in text
    assert "device-hours" in text and "measured here" in text
    assert "--refine 1 adds runs after the grid" in text
    assert not out.exists()


def test_the_plan_skips_finished_runs_without_touching_the_sweep_or_its_lock(tmp_path):
    run_sweep(SPEC, tmp_path, runner=fake_runner, report=False, progress=False)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    plan = plan_sweep(SPEC, tmp_path, calibration=_calibration(SPEC))
    assert len(plan.finished) == 6 and not plan.packs
    text = "\n".join(describe(plan))
    assert text.count("(finished)") == 6 and "nothing left to train" in text
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


def test_the_estimate_scales_with_epochs(tmp_path):
    short = plan_sweep(SPEC, tmp_path, pack=3, calibration=_calibration(SPEC))
    long = SweepSpec(**{**SPEC.__dict__, "epochs": 6})
    plan = plan_sweep(long, tmp_path, pack=3, calibration=_calibration(SPEC))
    assert [p.steps for p in short.packs] == [8, 8] and [p.steps for p in plan.packs] == [24, 24]
    assert plan.wall_s == pytest.approx(3 * short.wall_s)
    assert plan.device_hours == pytest.approx(3 * short.device_hours)
    assert short.wall_s == pytest.approx(2 * 8 * 0.02)  # two packs of 3, 0.02 s a step


def test_the_estimate_runs_packs_in_parallel_on_the_local_executor(tmp_path):
    plan = plan_sweep(
        SPEC, tmp_path, executor="local", workers=2, pack=1, calibration=_calibration(SPEC)
    )
    assert len(plan.packs) == 6 and plan.slots == 2
    assert plan.wall_s == pytest.approx(3 * 8 * 0.01)  # 6 single runs, 2 at a time
    assert "local: 2 worker process(es)" in "\n".join(describe(plan))


def test_a_calibration_file_round_trips_and_drives_the_plan(tmp_path, capsys):
    path = tmp_path / "cal.json"
    argv = [*ARGS, "--out", str(tmp_path / "s"), "--plan", "--calibration-out", str(path)]
    assert main(argv) == 0
    capsys.readouterr()
    measured = read_calibration(path)
    assert measured.speeds and write_calibration(tmp_path / "again.json", measured)
    assert read_calibration(tmp_path / "again.json").to_dict() == measured.to_dict()
    assert main([*ARGS, "--out", str(tmp_path / "s"), "--plan", "--calibration", str(path)]) == 0
    assert str(path) in capsys.readouterr().out
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "content, needle",
    [
        ("{not json", "not JSON"),
        ('{"format": "other"}', "format"),
        (json.dumps({"format": "spherelab-calibration", "version": 1}), "missing 'kinds'"),
        (
            json.dumps(
                {
                    "format": "spherelab-calibration", "version": 1, "device": "cpu",
                    "device_name": "x", "threads": 1, "torch": "2",
                    "kinds": [{"kind": "k", "label": "l", "steps_per_epoch": 4,
                               "steps_per_s": {"1": -3}, "record_s": {"1": 0.1}}],
                }
            ),
            "positive",
        ),
    ],
)  # fmt: skip
def test_a_bad_calibration_file_is_one_line_and_exit_2(tmp_path, capsys, content, needle):
    path = tmp_path / "cal.json"
    path.write_text(content)
    assert main([*ARGS, "--out", str(tmp_path / "s"), "--plan", "--calibration", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "--calibration-out" in err and len(err.splitlines()) == 1


def test_calibration_flags_need_the_plan(tmp_path, capsys):
    assert main([*ARGS, "--out", str(tmp_path / "s"), "--calibration", "x.json"]) == 2
    assert "add --plan" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_the_plan_packs_as_the_executor_will_and_times_unpaying_packs_one_by_one(tmp_path):
    spec = SweepSpec(
        dataset="synthetic:20:128",
        elrs=tuple(10.0**e for e in range(-4, 0)),
        seeds=(0, 1),
        epochs=2,
        overrides=TINY,
    )
    plan = plan_sweep(spec, tmp_path / "s", executor="local", workers=2, measure=False)
    assert [len(p.points) for p in plan.packs] == [4, 4]  # auto: no worker left idle
    assert plan.slots == 2 and not any(p.one_by_one for p in plan.packs)
    conv = SweepSpec(
        model="convnet_si",
        dataset="synthetic:3x8x8:64:16:10",
        elrs=(1e-3, 1e-2),
        epochs=1,
        overrides={"model.width": 2, "model.depth": 1, "train.device": "cpu"},
    )
    cal = _calibration(conv, step_s=0.01)
    (pack,) = plan_sweep(conv, tmp_path / "c", calibration=cal).packs
    assert pack.one_by_one  # grouped convolutions do not pay on a CPU: timed as 2 single runs
    assert pack.seconds == pytest.approx(2 * pack.steps * 0.01)
