"""Executors: every one writes the same summary.csv; options, extras and devices are checked."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import signal
import sys
import time
import types
from pathlib import Path

import pytest
import torch
from test_sweep import failing_runner

from spherelab import cli
from spherelab.config import Config, ConfigError, apply_overrides
from spherelab.sweep import executors
from spherelab.sweep.executors import (
    EngineRunner,
    SlurmJob,
    assign_devices,
    local_workers,
    make_settings,
    run_tasks,
    start_worker,
)
from spherelab.sweep.files import read_summary
from spherelab.sweep.packing import group_outcomes, pack_groups
from spherelab.sweep.run import run_sweep
from spherelab.sweep.spec import SweepSpec, expand
from spherelab.sweep.tasks import Task, execute, one_line_error

# small: every worker process imports torch (through spherelab/__init__)
SPEC = SweepSpec(elrs=(1e-3, 0.5), seeds=(0,), epochs=2, axes={"optim.momentum": [0.5]})
OPTIONS = {"submitit": {"cluster": "local", "poll_s": 0.2}, "ray": {}}


@pytest.fixture
def importable_tests(monkeypatch):
    """Fresh interpreters (submitit jobs, ray workers) import the fake runner from tests/."""
    paths = [str(Path(__file__).parent), *sys.path]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))


class FailingPacker:
    """failing_runner, that can also train packs: a pack fails as a whole when one of its
    members would (as a pack whose start fails does), so its members train one by one."""

    def __call__(self, config: Config, run_dir: str) -> dict:
        return failing_runner(config, run_dir)

    def train_pack(self, configs, run_dirs) -> list[dict]:
        for run_dir in run_dirs:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            (Path(run_dir) / "pack.log").write_text(f"{len(configs)}\n")
        return [self(c, d) for c, d in zip(configs, run_dirs)]


@pytest.fixture(scope="module")
def inline_rows(tmp_path_factory):
    return _sweep_with("inline", tmp_path_factory.mktemp("inline"))


def _sweep_with(executor: str, out: Path) -> list[dict[str, str]]:
    return read_summary(
        run_sweep(
            SPEC,
            out,
            executor=executor,
            workers=2,
            pack=2,
            report=False,
            runner=FailingPacker(),
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
    for row in rows:  # the two runs were tried as one pack, then one by one
        assert (tmp_path / row["run_dir"] / "pack.log").read_text() == "2\n"


def test_the_ray_executor_writes_the_same_summary_as_inline_and_gives_each_pack_its_gpus(
    inline_rows, tmp_path, importable_tests
):
    ray = pytest.importorskip("ray")
    # Two GPUs declared on a CPU machine: Ray hands them out (CUDA_VISIBLE_DEVICES) all the same.
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    try:
        rows = _sweep_with("ray", tmp_path)
        options = {"gpus_per_run": 1.0}
        settings = make_settings("ray", workers=2, pack=2, options=options, work_dir=tmp_path)
        outcomes = run_tasks("ray", _tasks(["auto"] * 4), RecordingRunner(), [].append, settings)
    finally:
        ray.shutdown()
    assert rows == inline_rows
    summaries = [o.summary for o in outcomes]
    assert [s["how"] for s in summaries] == ["pack of 2"] * 4
    devices = [s["device"] for s in summaries]
    assert devices[0] == devices[1] and devices[2] == devices[3]  # one GPU per pack
    assert {devices[0], devices[2]} <= {"0", "1"}


class FakeSubmitit:
    """submitit's AutoExecutor as the sweep uses it, run in this process: what it was asked."""

    asked: dict = {}

    def __init__(self, folder, cluster, **kwargs) -> None:
        FakeSubmitit.asked = dict(kwargs)
        self.jobs: list = []

    def update_parameters(self, **params) -> None:
        FakeSubmitit.asked |= params

    @contextlib.contextmanager
    def batch(self):
        yield

    def submit(self, function):
        self.jobs.append(function)
        return types.SimpleNamespace(result=function)


def test_submitit_submits_one_job_per_pack_with_its_gpus_and_requeues(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")  # the slurm extra: `make test-all` only
    monkeypatch.setattr(submitit, "AutoExecutor", FakeSubmitit)
    monkeypatch.setattr(submitit.helpers, "as_completed", lambda jobs, poll_frequency: jobs)
    options = {"cluster": "slurm", "gpus_per_run": 1, "max_timeouts": 9, "signal_delay_s": 120}
    settings = make_settings("submitit", workers=2, pack=2, options=options, work_dir=tmp_path)
    outcomes = run_tasks("submitit", _tasks(["auto"] * 3), RecordingRunner(), [].append, settings)
    assert [o.summary["how"] for o in outcomes] == ["pack of 2", "pack of 2", "alone"]
    asked = FakeSubmitit.asked
    assert asked["gpus_per_node"] == 1 and asked["slurm_max_num_timeout"] == 9
    assert asked["slurm_signal_delay_s"] == 120


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
        ("local", {"options": {"gpus": "0,x"}}, "--gpus 0,1,2,3"),
        ("local", {"options": {"gpus": [-1]}}, "GPU indices"),
        ("submitit", {"options": {"gpus": [0]}}, "no option"),
        ("submitit", {"options": {"cluster": "pbs"}}, "use slurm, local or debug"),
        ("submitit", {"options": {"max_timeouts": -1}}, "max_timeouts=-1 must be"),
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


def test_local_packs_get_cuda_devices_round_robin_unless_their_runs_chose_one():
    jobs = [[t] for t in _tasks(["auto", "cuda", "cpu", "auto", "cuda:5"])]
    jobs = assign_devices([jobs[0] + jobs[1], *jobs[2:]], n_gpus=2)
    assert [[t.config.train.device for t in job] for job in jobs] == [
        ["cuda:0", "cuda:0"],  # a pack shares one GPU
        ["cpu"],
        ["cuda:0"],
        ["cuda:5"],
    ]
    assert assign_devices([_tasks(["auto"])], n_gpus=0)[0][0].config.train.device == "auto"


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


def test_auto_packs_up_to_sixteen_runs_and_keeps_every_worker_busy():
    tasks = _cpu_tasks("mlp_si", 20) + _cpu_tasks("convnet_si", 3)
    assert [len(g) for g in pack_groups(tasks, "auto")] == [16, 4, 3]
    assert [len(g) for g in pack_groups(tasks, "auto", workers=4)] == [6, 6, 6, 2, 3]
    assert [len(g) for g in pack_groups(tasks[:16], "auto", workers=2)] == [8, 8]
    groups = pack_groups(tasks, "auto", workers=100)
    assert [len(g) for g in groups] == [1] * 23
    assert sorted(t.run_dir for g in groups for t in g) == sorted(t.run_dir for t in tasks)


class RecordingRunner:
    """Says how each run was trained: in a pack of K (train_pack) or alone (__call__)."""

    def __call__(self, config, run_dir):
        return {"how": "alone", "device": os.environ.get("CUDA_VISIBLE_DEVICES")}

    def train_pack(self, configs, run_dirs):
        gpu = os.environ.get("CUDA_VISIBLE_DEVICES")
        return [{"how": f"pack of {len(configs)}", "device": gpu} for _ in configs]


def test_auto_packs_where_packing_pays_on_the_device_the_pack_runs_on(monkeypatch):
    mlps, convnets = _cpu_tasks("mlp_si", 3), _cpu_tasks("convnet_si", 2)
    how = [o.summary["how"] for o in group_outcomes(mlps, RecordingRunner(), "auto")]
    assert how == ["pack of 3"] * 3  # on a CPU packing pays for MLPs only
    how = [o.summary["how"] for o in group_outcomes(convnets, RecordingRunner(), "auto")]
    assert how == ["alone"] * 2
    how = [o.summary["how"] for o in group_outcomes(convnets, RecordingRunner(), 2)]
    assert how == ["pack of 2"] * 2  # a number always packs
    monkeypatch.setattr("spherelab.sweep.packing.resolve_device", lambda d: torch.device("cuda"))
    how = [o.summary["how"] for o in group_outcomes(convnets, RecordingRunner(), "auto")]
    assert how == ["pack of 2"] * 2  # a worker with a GPU packs convnets too


def test_a_raising_runner_becomes_a_failed_outcome_with_one_line():
    task = _tasks(["auto"])[0]
    task = Task(apply_overrides(task.config, {"optim.elr": 0.9}), "/nowhere")
    outcome = execute(failing_runner, task)
    assert outcome.summary is None and outcome.error == "RuntimeError: loss exploded at step 3"
    assert one_line_error(KeyError()) == "KeyError"


class MeetingRunner(RecordingRunner):
    """Also says which process trained the run, and first waits (up to a minute) until `n`
    worker processes have started one, so that every worker takes part."""

    def __init__(self, meet: Path, n: int) -> None:
        self.meet, self.n = meet, n

    def _meet(self) -> int:
        (self.meet / str(os.getpid())).touch()
        deadline = time.monotonic() + 60
        while len(list(self.meet.iterdir())) < self.n and time.monotonic() < deadline:
            time.sleep(0.05)
        return os.getpid()

    def __call__(self, config, run_dir):
        return super().__call__(config, run_dir) | {"pid": self._meet()}

    def train_pack(self, configs, run_dirs):
        pid = self._meet()
        return [s | {"pid": pid} for s in super().train_pack(configs, run_dirs)]


def test_a_local_worker_takes_its_own_gpu_and_its_share_of_the_cores(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    gpus = multiprocessing.get_context("spawn").Queue()
    for gpu in (3, 5):
        gpus.put(gpu)
    start_worker(1, gpus)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3" and torch.get_num_threads() == 1
    start_worker(1, gpus)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    settings = make_settings("local", workers=7, pack=2, options={"gpus": "3,5"}, work_dir=".")
    assert settings.options["gpus"] == (3, 5) and local_workers(settings) == 2


@pytest.mark.slow  # spawns two workers (~10 s on a busy 2-core machine)
def test_local_gpus_pin_one_worker_to_each_gpu_and_spread_the_packs(tmp_path, importable_tests):
    settings = make_settings("local", workers=7, pack=2, options={"gpus": "3,5"}, work_dir=tmp_path)
    tasks = _tasks(["auto"] * 6)  # six packable runs: three packs of two
    (tmp_path / "meet").mkdir()
    outcomes = run_tasks("local", tasks, MeetingRunner(tmp_path / "meet", 2), [].append, settings)
    summaries = [o.summary for o in outcomes]
    assert [s["how"] for s in summaries] == ["pack of 2"] * 6
    gpu_of = {s["pid"]: s["device"] for s in summaries}
    assert sorted(gpu_of.values()) == ["3", "5"]  # two workers, one per GPU, each pinned
    assert all(gpu_of[s["pid"]] == s["device"] for s in summaries)
    for i in (0, 2, 4):  # a pack trains in one worker, on one GPU
        assert summaries[i]["pid"] == summaries[i + 1]["pid"]


def test_local_gpus_refuse_a_run_that_names_its_gpu_before_anything_runs(tmp_path):
    options = {"gpus": [0, 1]}
    settings = make_settings("local", workers=2, pack=1, options=options, work_dir=tmp_path)
    with pytest.raises(ConfigError, match="train.device='cuda:1' names a GPU"):
        run_tasks("local", _tasks(["auto", "cuda:1"]), RecordingRunner(), [].append, settings)
    spec = dataclasses.replace(SPEC, overrides={"train.device": "cuda:0"})
    with pytest.raises(ConfigError, match="--gpus pins each worker"):
        run_sweep(spec, tmp_path / "s", executor="local", executor_options=options)
    assert not (tmp_path / "s").exists()


# Real packs of a float64 MLP: one converging, one chaotic and one non-finite ELR, two seeds.
PACKED = SweepSpec(
    elrs=(1e-3, 1e-1, 1e300),
    seeds=(0, 1),
    model="mlp_si",
    dataset="synthetic:20:128",
    epochs=3,
    overrides={
        "model.width": 8,
        "train.records": 3,
        "train.device": "cpu",
        "train.dtype": "float64",
    },
)


def _plant_another_run(sweep: Path, point) -> None:
    """A directory that already holds a different run: that member fails at its start."""
    run = sweep / point.run_dir
    run.mkdir(parents=True)
    other = apply_overrides(point.config, {"optim.elr": 0.5})
    (run / "config.json").write_text(json.dumps(other.to_dict()))
    (run / "metrics.jsonl").write_text('{"step": 5}\n')


def _packed_sweep(executor: str, out: Path, **options) -> list[dict[str, str]]:
    return read_summary(
        run_sweep(
            PACKED,
            out,
            executor=executor,
            workers=2,
            pack=3,
            report=False,
            progress=False,
            executor_options=options or OPTIONS.get(executor),
        )
    )


def _same_files(a: Path, b: Path, rows) -> None:
    for row in rows:
        for name in ("metrics.jsonl", "summary.json"):
            if row["status"] != "failed":
                assert (a / row["run_dir"] / name).read_bytes() == (
                    b / row["run_dir"] / name
                ).read_bytes(), (row["run_dir"], name)


@pytest.fixture(scope="module")
def inline_packs(tmp_path_factory):
    out = tmp_path_factory.mktemp("inline_packs")
    _plant_another_run(out, expand(PACKED)[1])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a local worker on 2 cores (the float sums depend on it)
    try:
        return out, _packed_sweep("inline", out)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow  # spawns two workers and trains six runs (~10 s on a busy 2-core machine)
def test_local_packs_write_the_inline_files_isolate_faults_and_finish_a_half_done_pack(
    tmp_path, inline_packs, monkeypatch
):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)  # one thread per worker, as inline
    inline_dir, inline = inline_packs
    _plant_another_run(tmp_path, expand(PACKED)[1])
    rows = _packed_sweep("local", tmp_path)
    assert [r | {"error": ""} for r in rows] == [r | {"error": ""} for r in inline]
    statuses = [r["status"] for r in rows]
    assert statuses == ["finished", "failed", "finished", "finished", "nonfinite", "nonfinite"]
    assert "already holds a different run" in rows[1]["error"]
    _same_files(tmp_path, inline_dir, rows)
    # Half a pack done: one member lost its last checkpoint and summary (killed), one is done.
    half = tmp_path / rows[3]["run_dir"]
    sorted((half / "checkpoints").glob("step_*.pt"))[-1].unlink()
    (half / "summary.json").unlink()
    done = tmp_path / rows[2]["run_dir"] / "summary.json"
    stamp = done.stat().st_mtime_ns
    again = _packed_sweep("local", tmp_path)
    assert done.stat().st_mtime_ns == stamp  # a finished run is not trained again
    assert [r["status"] for r in again] == statuses
    loss, before = float(again[3]["train_loss"]), float(rows[3]["train_loss"])
    assert abs(loss - before) <= 1e-6 * before  # resumed alone: float64 agrees to 1e-6


class PreemptOnce:
    """Progress that preempts its own job once, at the end of epoch `epoch`: it sends the
    signal Slurm (and submitit's local executor) send on preemption or near a time limit."""

    def __init__(self, marker: Path, epoch: int) -> None:
        self.marker, self.epoch = marker, epoch

    def __call__(self, info: dict) -> None:
        if info["epoch"] == self.epoch and not self.marker.exists():
            self.marker.write_text(f"{os.getpid()}\n")
            submitit = pytest.importorskip("submitit")
            os.kill(os.getpid(), getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG))


@pytest.mark.slow  # two submitit job starts (~20 s on a busy 2-core machine)
def test_a_preempted_submitit_job_requeues_itself_and_resumes_bitwise(
    tmp_path, importable_tests, monkeypatch
):
    pytest.importorskip("submitit")  # the slurm extra: installed by `make test-all` only
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the job's float sums as in this process
    spec = dataclasses.replace(
        PACKED, elrs=(1e-2, 5e-2), seeds=(0,), epochs=6, overrides=PACKED.overrides
    )
    spec = dataclasses.replace(spec, overrides={**spec.overrides, "train.dtype": "float32"})
    ref = read_summary(run_sweep(spec, tmp_path / "ref", pack=2, report=False, progress=False))
    marker = tmp_path / "preempted"
    rows = read_summary(
        run_sweep(
            spec,
            tmp_path / "cut",
            executor="submitit",
            pack=2,
            report=False,
            progress=False,
            runner=EngineRunner(progress=PreemptOnce(marker, epoch=4)),
            executor_options=OPTIONS["submitit"],
        )
    )
    assert marker.exists()  # the job was preempted at epoch 4 of 6 (records: 0, 2 and 6)
    logs = "".join(p.read_text() for p in (tmp_path / "cut" / "submitit").glob("*.out"))
    assert "Requeued job" in logs and "Job completed successfully" in logs
    assert rows == ref and {r["status"] for r in rows} == {"finished"}
    for row in rows:
        a, b = tmp_path / "ref" / row["run_dir"], tmp_path / "cut" / row["run_dir"]
        for name in ("metrics.jsonl", "summary.json"):
            assert (a / name).read_bytes() == (b / name).read_bytes(), (row["run_dir"], name)
        names = sorted(p.name for p in (a / "checkpoints").iterdir())
        assert sorted(p.name for p in (b / "checkpoints").iterdir()) == names


def test_a_slurm_job_stops_its_pack_at_an_epoch_end_then_hands_over_to_submitit(
    tmp_path, monkeypatch, request
):
    submitit = pytest.importorskip("submitit")  # the slurm extra: `make test-all` only
    sig = getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG)
    requeued = []

    def submitit_handler(signum, frame):  # stands in for submitit's: checkpoint, requeue, exit
        requeued.append(job.checkpoint())
        raise SystemExit(144)

    before = signal.getsignal(sig)
    request.addfinalizer(lambda: signal.signal(sig, before))  # the job leaves its handler set
    monkeypatch.setattr(signal, "getsignal", lambda s: submitit_handler if s == sig else None)
    spec = dataclasses.replace(PACKED, elrs=(1e-2, 5e-2), seeds=(0,), epochs=6)
    tasks = [Task(p.config, str(tmp_path / p.run_dir)) for p in expand(spec)]
    runner = EngineRunner(progress=PreemptOnce(tmp_path / "preempted", epoch=4))
    job = SlurmJob(runner, tasks, 2)
    with pytest.raises(SystemExit):
        job()
    assert requeued[0].function is job and runner.stop is None  # the same job, again
    for task in tasks:
        steps = [p.name for p in (Path(task.run_dir) / "checkpoints").glob("step_*.pt")]
        assert "step_000000004.pt" in steps  # stopped at its epoch end, with a checkpoint
        assert not (Path(task.run_dir) / "summary.json").exists()
    outcomes = requeued[0].result()  # the requeued job finishes the pack
    assert [o.summary["status"] for o in outcomes] == ["finished", "finished"]
    assert [o.summary["step"] for o in outcomes] == [6, 6]


def test_cli_bad_gpus_exit_2_with_one_line_before_anything_runs(tmp_path, capsys):
    argv = ["sweep", "--elrs", "1e-3", "--out", str(tmp_path / "s"), "--executor", "local"]
    code = cli.main([*argv, "--gpus", "0,x"])
    err = capsys.readouterr().err
    assert code == 2 and "gpus='0,x' is not a list of GPU indices" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "s").exists()


# --- the CUDA path (pytest -m gpu; benchmarks/gpu_check.sh runs these) -------------------------
# Their CPU twins are above: the same code paths, with a fake GPU list and the CPU device.
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
# A tiny float64 ConvNet at convergent ELRs (chaotic ones amplify rounding differences).
CONV = SweepSpec(
    elrs=(1e-3, 2e-3),
    seeds=(0,),
    model="convnet_si",
    dataset="synthetic:2x8x8:64:32",
    epochs=6,
    overrides={
        "model.width": 3,
        "model.depth": 2,
        "data.batch_size": 16,
        "train.records": 3,
        "train.dtype": "float64",
        "train.eval_batch_size": 32,
    },
)


@pytest.mark.gpu
@needs_cuda
def test_a_local_gpu_worker_packs_on_its_own_gpu_and_matches_inline(tmp_path):
    ref = read_summary(run_sweep(CONV, tmp_path / "inline", report=False, progress=False))
    options = {"gpus": [torch.cuda.device_count() - 1]}  # the last GPU: seen as cuda:0
    rows = read_summary(
        run_sweep(
            CONV,
            tmp_path / "local",
            executor="local",
            report=False,
            progress=False,
            executor_options=options,
        )
    )
    for a, b in zip(ref, rows):
        assert b["status"] == "finished"
        assert float(b["train_loss"]) == pytest.approx(float(a["train_loss"]), rel=1e-6)
        saved = json.loads((tmp_path / "local" / b["run_dir"] / "config.json").read_text())
        assert saved["train"]["device"] == "auto"  # the config is the user's
        assert saved["environment"]["device"].startswith("cuda")  # auto found the pinned GPU


@pytest.mark.gpu
@needs_cuda
def test_a_stopped_pack_resumes_on_cuda(tmp_path):
    from spherelab.train import train_ensemble
    from spherelab.train.loop import Interrupted

    tasks = [
        Task(apply_overrides(p.config, {"train.device": "cuda"}), str(tmp_path / p.run_dir))
        for p in expand(CONV)
    ]
    cfgs = [t.config for t in tasks]
    full = train_ensemble(cfgs, [tmp_path / "full" / str(k) for k in range(len(cfgs))])
    stop = iter([False, False, False, True]).__next__  # asked at every epoch end: stop at 4
    with pytest.raises(Interrupted):
        train_ensemble(cfgs, [t.run_dir for t in tasks], stop=stop)
    resumed = train_ensemble(cfgs, [t.run_dir for t in tasks])
    for a, b in zip(full, resumed):
        assert b["step"] == a["step"]
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-6)


def test_the_cli_slurm_flags_reach_submitit(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")  # the slurm extra: `make test-all` only
    monkeypatch.setattr(submitit, "AutoExecutor", FakeSubmitit)
    monkeypatch.setattr(submitit.helpers, "as_completed", lambda jobs, poll_frequency: jobs)
    monkeypatch.setattr(executors, "train_runner", failing_runner)
    argv = ["sweep", "--elrs", "1e-3", "--out", str(tmp_path / "s"), "--no-report"]
    slurm = ["--executor", "submitit", "--cluster", "slurm", "--partition", "gpu"]
    more = ["--gpus-per-run", "1", "--timeout-min", "60", "--max-timeouts", "7"]
    assert cli.main([*argv, *slurm, *more, "--signal-delay-s", "200"]) == 0
    asked = FakeSubmitit.asked
    assert (asked["slurm_partition"], asked["gpus_per_node"], asked["timeout_min"]) == (
        "gpu",
        1,
        60,
    )
    assert (asked["slurm_max_num_timeout"], asked["slurm_signal_delay_s"]) == (7, 200)
