"""Executors: every one writes the same summary.csv; options, extras and devices are checked."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from test_sweep import failing_runner

from spherelab.config import Config, ConfigError, apply_overrides
from spherelab.sweep.executors import assign_devices, make_settings
from spherelab.sweep.files import read_summary
from spherelab.sweep.packing import pack_groups
from spherelab.sweep.run import run_sweep
from spherelab.sweep.spec import SweepSpec
from spherelab.sweep.tasks import Task, execute, one_line_error

# small: every worker process imports torch (through spherelab/__init__)
SPEC = SweepSpec(elrs=(1e-3, 0.5), seeds=(0,), epochs=2, axes={"optim.momentum": [0.5]})
OPTIONS = {"submitit": {"cluster": "local", "poll_s": 0.2}, "ray": {}}


@pytest.fixture
def importable_tests(monkeypatch):
    """Fresh interpreters (submitit jobs, ray workers) import the fake runner from tests/."""
    paths = [str(Path(__file__).parent), *sys.path]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))


@pytest.fixture(scope="module")
def inline_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("inline")
    return read_summary(run_sweep(SPEC, out, runner=failing_runner, report=False))


def _sweep_with(executor: str, out: Path) -> list[dict[str, str]]:
    return read_summary(
        run_sweep(
            SPEC,
            out,
            executor=executor,
            workers=2,
            report=False,
            runner=failing_runner,
            executor_options=OPTIONS.get(executor),
        )
    )


@pytest.mark.parametrize("executor", ["local", "submitit"])
def test_every_executor_writes_the_same_summary_as_inline(
    executor, inline_rows, tmp_path, importable_tests
):
    if executor == "submitit":
        pytest.importorskip("submitit")  # the slurm extra: installed by `make test-all` only
    rows = _sweep_with(executor, tmp_path)
    assert rows == inline_rows
    assert len(rows) == 2 and {r["status"] for r in rows} == {"finished", "failed"}


def test_the_ray_executor_writes_the_same_summary_as_inline(
    inline_rows, tmp_path, importable_tests
):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        rows = _sweep_with("ray", tmp_path)
    finally:
        ray.shutdown()
    assert rows == inline_rows


@pytest.mark.parametrize("executor, extra", [("ray", "ray"), ("submitit", "slurm")])
def test_a_missing_extra_names_the_pip_install(monkeypatch, tmp_path, executor, extra):
    monkeypatch.setitem(sys.modules, executor, None)  # makes `import <executor>` fail
    with pytest.raises(ValueError) as err:
        run_sweep(SPEC, tmp_path / "out", executor=executor, runner=failing_runner)
    assert str(err.value) == (
        f"executor {executor!r} needs the {extra} extra: pip install 'spherelab[{extra}]'"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "executor, kwargs, message",
    [
        ("threads", {}, "unknown executor"),
        ("local", {"options": {"array_parallelism": 4}}, "no option"),
        ("ray", {"options": {"partition": "gpu"}}, "valid options: address"),
        ("local", {"pack": 4}, "needs executor 'inline'"),
        ("inline", {"workers": 0}, "workers=0"),
        ("inline", {"pack": "some"}, "or 'auto'"),
    ],
)
def test_bad_executor_settings_are_rejected_naming_the_fix(executor, kwargs, message):
    settings = {"workers": 2, "pack": 1, "options": None, "work_dir": Path(".")} | kwargs
    with pytest.raises(ConfigError, match=message):
        make_settings(executor, **settings)


def _tasks(devices: list[str]) -> list[Task]:
    return [
        Task(
            apply_overrides(Config(), {"train.device": d, "optim.elr": 1e-3 * (i + 1)}),
            f"/runs/{i}",
        )
        for i, d in enumerate(devices)
    ]


def test_local_runs_get_cuda_devices_round_robin_unless_they_chose_one():
    tasks = assign_devices(_tasks(["auto", "cuda", "cpu", "auto", "cuda:5"]), n_gpus=2)
    assert [t.config.train.device for t in tasks] == ["cuda:0", "cuda:1", "cpu", "cuda:1", "cuda:5"]
    assert assign_devices(_tasks(["auto"]), n_gpus=0)[0].config.train.device == "auto"


def test_packs_hold_only_runs_that_differ_in_elr_and_seed():
    tasks = _tasks(["auto"] * 5) + _tasks(["cpu"] * 2)
    groups = pack_groups(tasks, pack=2)
    assert [len(g) for g in groups] == [2, 2, 1, 2]
    assert all(len({t.config.train.device for t in g}) == 1 for g in groups)
    assert [t for g in groups for t in g] == tasks


def _cpu_tasks(model: str, n: int) -> list[Task]:
    over = {"train.device": "cpu", "model.name": model}
    return [
        Task(apply_overrides(Config(), over | {"optim.elr": 1e-3 * (i + 1)}), f"/{model}/{i}")
        for i in range(n)
    ]


def test_auto_packs_mlps_on_a_cpu_up_to_sixteen_and_leaves_convnets_alone():
    tasks = _cpu_tasks("mlp_si", 20) + _cpu_tasks("convnet_si", 3)
    groups = pack_groups(tasks, pack="auto")
    assert [len(g) for g in groups] == [16, 4, 1, 1, 1]
    assert {t.config.model.name for g in groups[:2] for t in g} == {"mlp_si"}
    assert sorted(t.run_dir for g in groups for t in g) == sorted(t.run_dir for t in tasks)


def test_auto_pack_means_no_packing_outside_the_inline_executor():
    settings = {"workers": 2, "pack": "auto", "options": None, "work_dir": Path(".")}
    assert make_settings("local", **settings).pack == 1
    assert make_settings("inline", **settings).pack == "auto"


def test_a_raising_runner_becomes_a_failed_outcome_with_one_line():
    task = _tasks(["auto"])[0]
    task = Task(apply_overrides(task.config, {"optim.elr": 0.9}), "/nowhere")
    outcome = execute(failing_runner, task)
    assert outcome.summary is None and outcome.error == "RuntimeError: loss exploded at step 3"
    assert one_line_error(KeyError()) == "KeyError"
