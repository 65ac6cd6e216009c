"""ELR sweeps: spec parsing, expansion, resume/skip, failures, refinement and the CLI."""

from __future__ import annotations

import itertools
import json
import logging
import math
from pathlib import Path

import pytest

from spherelab import cli
from spherelab.config import Config, ConfigError, load_json
from spherelab.regimes import FINAL_STATUSES, REGIMES, UNDETERMINED
from spherelab.sweep import executors
from spherelab.sweep import spec as sweep_spec
from spherelab.sweep.files import read_summary
from spherelab.sweep.run import run_sweep
from spherelab.sweep.spec import SweepSpec, expand, load_spec, parse_elrs

CONVERGENCE_BELOW, DIVERGENCE_FROM, FAIL_ABOVE = 0.01, 0.1, 0.05


def fake_regime(elr: float) -> str:
    if elr < CONVERGENCE_BELOW:
        return "convergence"
    return "chaotic_equilibrium" if elr < DIVERGENCE_FROM else "divergence"


def fake_runner(config: Config, run_dir: str) -> dict:
    """Writes what a real run writes; counts its calls in calls.log; labels by ELR threshold."""
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "calls.log").open("a") as handle:
        handle.write("call\n")
    if (out / "summary.json").exists():
        summary = json.loads((out / "summary.json").read_text())
        if summary["status"] in ("finished", "nonfinite"):
            return summary
    elr, seed = config.optim.elr, config.train.seed
    records = [
        {
            "epoch": e,
            "step": 10 * e,
            "train_loss": (elr + seed) / (e + 1),
            "train_acc": 0.5,
            "test_loss": 1.0 + elr,
            "test_acc": 0.25 + seed / 100,
            "eff_grad_norm": 1 / elr,
            "si_norm": 12.5,
            "angle": 0.1,
        }
        for e in range(3)
    ]
    (out / "config.json").write_text(json.dumps(config.to_dict()))
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    status = "nonfinite" if elr >= 1 else "finished"
    summary = records[-1] | {"regime": fake_regime(elr), "status": status, "regime_stats": {}}
    (out / "summary.json").write_text(json.dumps(summary))
    return summary


def failing_runner(config: Config, run_dir: str) -> dict:
    if config.optim.elr > FAIL_ABOVE:
        raise RuntimeError("loss exploded\n  at step 3")
    return fake_runner(config, run_dir)


def calls(out: Path, row: dict) -> int:
    log_file = out / row["run_dir"] / "calls.log"
    return len(log_file.read_text().splitlines()) if log_file.exists() else 0


def small_spec(**changes) -> SweepSpec:
    fields = {"elrs": (1e-3, 2e-2, 0.5), "seeds": (0, 1), "epochs": 2, "name": "t"}
    return SweepSpec(**(fields | changes))


def test_parse_elrs_reads_comma_lists_and_inclusive_logspace():
    assert parse_elrs("1e-4, 3e-3") == (1e-4, 3e-3)
    grid = parse_elrs("logspace:1e-4:1:8")
    assert len(grid) == 8 and grid[0] == 1e-4 and grid[-1] == 1.0
    ratios = [b / a for a, b in itertools.pairwise(grid)]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-9)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a,b",
        "1e-3,",
        "1e-3,-1e-3",
        "0",
        "1e-3,1e-3",
        "logspace:0:1:3",
        "logspace:1:1e-3:3",
        "logspace:1e-4:1",
        "logspace:1e-4:1:1",
        "logspace:1e-4:1:x",
        "logspace:1e-4:1:3:4",
    ],
)
def test_parse_elrs_rejects_bad_strings_with_the_fix(text):
    with pytest.raises(ConfigError, match="ELR"):
        parse_elrs(text)


def test_load_spec_reads_fields_the_set_table_and_axes(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text(
        'name = "demo"\nmodel = "convnet_si"\ndataset = "synthetic"\n'
        'elrs = "logspace:1e-3:1e-1:3"\nseeds = [0, 2]\nepochs = 4\n'
        '[set]\n"data.batch_size" = 64\n[set.optim]\nsphere = "per_tensor"\n'
        '[axes]\n"optim.momentum" = [0.0, 0.9]\n'
    )
    spec = load_spec(path)
    assert (spec.name, spec.model, spec.dataset, spec.epochs) == (
        "demo",
        "convnet_si",
        "synthetic",
        4,
    )
    assert spec.elrs == pytest.approx((1e-3, 1e-2, 1e-1)) and spec.seeds == (0, 2)
    assert spec.overrides == {"data.batch_size": 64, "optim.sphere": "per_tensor"}
    assert spec.axes == {"optim.momentum": (0.0, 0.9)}
    assert sweep_spec.spec_from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    "body, message",
    [
        ("elrs = [1e-3]\nlr = 1\n", "unknown field"),
        ("elrs = [1e-3, 0.0]\n", "must be a finite number > 0"),
        ("elrs = []\n", "empty"),
        ("seeds = [0]\n", "no elrs"),
        ("elrs = [1e-3]\nseeds = []\n", "seeds"),
        ('elrs = [1e-3]\n[axes]\n"optim.momentum" = []\n', "non-empty list"),
        ('elrs = [1e-3]\n[axes]\n"optim.elr" = [1e-3]\n', "elrs"),
        (
            'elrs = [1e-3]\n[set]\n"optim.momentum" = 0.9\n[axes]\n"optim.momentum" = [0.0]\n',
            "both fixed",
        ),
    ],
)
def test_load_spec_rejects_bad_specs_naming_the_problem(tmp_path, body, message):
    path = tmp_path / "spec.toml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=message):
        load_spec(path)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"overrides": {"optim.no_such_key": 1}}, "unknown key"),
        ({"axes": {"data.batch_size": ["big"]}}, "data.batch_size"),
    ],
)
def test_bad_points_are_rejected_before_anything_runs(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message):
        run_sweep(small_spec(**changes), tmp_path / "out", runner=fake_runner, report=False)
    assert not (tmp_path / "out").exists()


def test_expand_crosses_axes_with_elrs_and_seeds():
    spec = small_spec(
        axes={"optim.momentum": [0.0, 0.5], "data.batch_size": [32, 64, 128]},
        overrides={"data.train_subset": 100},
    )
    points = expand(spec)
    assert len(points) == 2 * 3 * len(spec.elrs) * len(spec.seeds)
    seen = {
        (p.config.optim.momentum, p.config.data.batch_size, p.config.optim.elr, p.config.train.seed)
        for p in points
    }
    assert len(seen) == len(points)
    assert all(p.config.data.train_subset == 100 and p.config.train.epochs == 2 for p in points)
    assert len({p.name for p in points}) == len(points)


def test_summary_values_come_from_the_runs_not_from_directory_names(tmp_path, monkeypatch):
    opaque = iter(range(1000))
    monkeypatch.setattr(sweep_spec, "run_name", lambda elr, seed, axes: f"run{next(opaque)}")
    spec = small_spec(axes={"optim.momentum": [0.0, 0.5]})
    rows = read_summary(run_sweep(spec, tmp_path, runner=fake_runner, report=False))
    assert len(rows) == 2 * len(spec.elrs) * len(spec.seeds)
    assert all(row["run_dir"].startswith("runs/run") for row in rows)  # opaque names
    for row in rows:
        cfg = load_json(tmp_path / row["run_dir"] / "config.json")
        assert (float(row["elr"]), int(row["seed"]), float(row["optim.momentum"])) == (
            cfg.optim.elr,
            cfg.train.seed,
            cfg.optim.momentum,
        )
        assert row["regime"] == fake_regime(cfg.optim.elr)


def test_summary_csv_has_the_documented_columns_in_order(tmp_path):
    spec = small_spec(elrs=(1e-3, 1.0), axes={"optim.momentum": [0.0]})
    rows = read_summary(run_sweep(spec, tmp_path, runner=fake_runner, report=False))
    assert list(rows[0]) == [
        "elr",
        "seed",
        "optim.momentum",
        "regime",
        "status",
        "train_loss",
        "train_acc",
        "test_loss",
        "test_acc",
        "eff_grad_norm",
        "si_norm",
        "epochs",
        "final_elr",
        "lyapunov",
        "lyapunov_err",
        "step_angle_mean",
        "run_dir",
        "error",
    ]
    assert {r["status"] for r in rows} == {"finished", "nonfinite"}
    assert json.loads((tmp_path / "sweep.json").read_text())["spec"] == spec.to_dict()


def test_rerun_skips_finished_runs_and_resumes_unfinished_ones(tmp_path):
    spec = small_spec()
    rows = read_summary(run_sweep(spec, tmp_path, runner=fake_runner, report=False))
    unfinished = tmp_path / rows[0]["run_dir"] / "summary.json"
    unfinished.unlink()
    again = read_summary(run_sweep(spec, tmp_path, runner=fake_runner, report=False))
    assert [calls(tmp_path, r) for r in again] == [2] + [1] * (len(rows) - 1)
    assert again == rows


def test_a_failing_run_is_recorded_with_its_error_while_the_others_finish(tmp_path):
    rows = read_summary(run_sweep(small_spec(), tmp_path, runner=failing_runner, report=False))
    failed = [r for r in rows if float(r["elr"]) > FAIL_ABOVE]
    assert failed and all(r["status"] == "failed" for r in failed)
    assert {r["error"] for r in failed} == {"RuntimeError: loss exploded at step 3"}
    others = [r for r in rows if r not in failed]
    assert others and all(r["status"] == "finished" and not r["error"] for r in others)


def test_a_different_spec_is_refused_unless_it_only_adds_points(tmp_path):
    run_sweep(small_spec(), tmp_path, runner=fake_runner, report=False)
    for changed in (
        small_spec(epochs=3),
        small_spec(elrs=(1e-3, 0.5)),
        small_spec(overrides={"data.batch_size": 7}),
    ):
        with pytest.raises(ConfigError, match="new --out"):
            run_sweep(changed, tmp_path, runner=fake_runner, report=False)
    bigger = small_spec(elrs=(1e-3, 2e-2, 0.5, 3e-2), seeds=(0, 1, 2))
    rows = read_summary(run_sweep(bigger, tmp_path, runner=fake_runner, report=False))
    assert len(rows) == 4 * 3
    assert sum(calls(tmp_path, r) for r in rows) == 4 * 3


def test_refine_adds_points_inside_each_boundary_interval_for_every_seed(tmp_path):
    spec = small_spec(elrs=(1e-3, 1e-1), axes={"optim.momentum": [0.0, 0.5]})
    rows = read_summary(run_sweep(spec, tmp_path, runner=fake_runner, refine=2, report=False))
    for momentum in ("0.0", "0.5"):
        group = [r for r in rows if r["optim.momentum"] == momentum]
        elrs = sorted({float(r["elr"]) for r in group})
        # round 1 splits [1e-3, 1e-1] at 1e-2, round 2 splits both halves (two boundaries)
        assert len(elrs) == 5 and len(group) == len(elrs) * len(spec.seeds)
        assert elrs[0] == 1e-3 and elrs[-1] == 1e-1
        labels = [fake_regime(e) for e in elrs]
        flips = [i for i in range(len(elrs) - 1) if labels[i] != labels[i + 1]]
        assert len(flips) == 2
        assert all(math.log(elrs[i + 1] / elrs[i]) <= math.log(100) / 4 * (1 + 1e-9) for i in flips)
    assert len(json.loads((tmp_path / "sweep.json").read_text())["refined"]) == 2
    again = read_summary(run_sweep(spec, tmp_path, runner=fake_runner, refine=2, report=False))
    assert again == rows and all(calls(tmp_path, r) == 1 for r in rows)
    more = read_summary(run_sweep(spec, tmp_path, runner=fake_runner, refine=3, report=False))
    assert len(more) == len(rows) + 2 * 2 * len(spec.seeds)


def test_a_failing_report_is_logged_and_the_sweep_still_finishes(tmp_path, monkeypatch, caplog):
    def broken_report(sweep_dir):
        raise OSError("disk full")

    monkeypatch.setattr("spherelab.sweep.run.write_report", broken_report)
    with caplog.at_level(logging.WARNING, logger="spherelab"):
        path = run_sweep(small_spec(), tmp_path, runner=fake_runner)
    assert len(read_summary(path)) == 3 * 2
    assert "OSError: disk full" in caplog.text


def test_cli_sweep_runs_prints_the_table_and_where_the_summary_is(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(executors, "train_runner", fake_runner)
    spec = tmp_path / "spec.toml"
    spec.write_text('elrs = [1.0]\nepochs = 3\n[set]\n"data.batch_size" = 16\n')
    code = cli.main(
        [
            "sweep",
            "--spec",
            str(spec),
            "--elrs",
            "1e-3,2e-2",
            "--seeds",
            "0,1",
            "--set",
            "data.train_subset=64",
            "--out",
            str(tmp_path / "s"),
            "--no-report",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "convergence | chaotic_equilibrium" in out and str(tmp_path / "s") in out
    rows = read_summary(tmp_path / "s" / "summary.csv")
    assert [(r["elr"], r["seed"]) for r in rows] == [
        ("0.001", "0"),
        ("0.001", "1"),
        ("0.02", "0"),
        ("0.02", "1"),
    ]
    cfg = load_json(tmp_path / "s" / rows[0]["run_dir"] / "config.json")
    assert (cfg.data.batch_size, cfg.data.train_subset, cfg.train.epochs) == (16, 64, 3)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--elrs", "1e-3,x"], "comma list"),
        ([], "no ELRs"),
        (["--elrs", "1e-3", "--set", "optim.nope=1"], "unknown key"),
        (["--elrs", "1e-3", "--executor", "local", "--array-parallelism", "2"], "no option"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, message):
    code = cli.main(["sweep", "--out", str(tmp_path / "s"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_real_tiny_sweep_trains_every_run_and_a_rerun_reuses_them(tmp_path):
    spec = SweepSpec(
        elrs=(1e-3, 10.0),
        dataset="synthetic:40:128:64:4",
        epochs=1,
        overrides={"data.batch_size": 64, "train.records": 2, "train.checkpoints": "none"},
    )
    rows = read_summary(run_sweep(spec, tmp_path, report=False))
    assert [float(r["elr"]) for r in rows] == list(spec.elrs)
    # a 1-epoch run is too short for a convergence label: it may be undetermined
    labels = (*REGIMES, UNDETERMINED)
    assert all(r["status"] in FINAL_STATUSES and r["regime"] in labels for r in rows)
    stamps = [(tmp_path / r["run_dir"] / "summary.json").stat().st_mtime_ns for r in rows]
    assert read_summary(run_sweep(spec, tmp_path, report=False)) == rows
    assert stamps == [(tmp_path / r["run_dir"] / "summary.json").stat().st_mtime_ns for r in rows]


def test_packed_inline_sweep_matches_the_unpacked_sweep(tmp_path):
    spec = SweepSpec(
        elrs=(1e-3, 1e-2, 1e-1),
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
    single = read_summary(
        run_sweep(spec, tmp_path / "single", progress=False, report=False, pack=1)
    )
    packed = read_summary(
        run_sweep(spec, tmp_path / "packed", progress=False, report=False, pack=3)
    )
    assert [r["regime"] for r in packed] == [r["regime"] for r in single]
    for a, b in zip(single, packed):
        assert abs(float(a["train_loss"]) - float(b["train_loss"])) < 1e-6 * float(a["train_loss"])


def test_relabel_rewrites_the_regime_from_the_records(tmp_path):
    import json as _json

    from spherelab.sweep.run import relabel_sweep

    spec = SweepSpec(
        elrs=(1e-2,),
        model="mlp_si",
        dataset="synthetic:20:128",
        epochs=3,
        overrides={"model.width": 8, "train.records": 3, "train.device": "cpu"},
    )
    run_sweep(spec, tmp_path, progress=False, report=False)
    row = read_summary(tmp_path / "summary.csv")[0]
    path = tmp_path / row["run_dir"] / "summary.json"
    summary = _json.loads(path.read_text())
    summary["regime"] = "divergence" if row["regime"] != "divergence" else "convergence"
    path.write_text(_json.dumps(summary))  # a stale label, as after a classifier change
    relabel_sweep(tmp_path)
    assert read_summary(tmp_path / "summary.csv")[0]["regime"] == row["regime"]
    assert _json.loads(path.read_text())["regime"] == row["regime"]
