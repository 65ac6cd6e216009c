"""`spherelab diagnose` and online diagnostics on real (tiny) runs."""

import json

import pytest

from spherelab.cli import main
from spherelab.config import Config, apply_overrides
from spherelab.diagnose import DiagnoseOptions, diagnose_run, hooks_for, parse_what
from spherelab.io import read_jsonl
from spherelab.train import train_ensemble, train_run


def _cfg(**over) -> Config:
    base = {
        "model.name": "mlp_si",
        "model.width": 16,
        "model.depth": 2,
        "data.name": "synthetic:20:128",
        "data.batch_size": 32,
        "train.epochs": 3,
        "train.records": 3,
        "optim.elr": 1e-2,
        "train.device": "cpu",
        "train.dtype": "float64",
    }
    return apply_overrides(Config(), base | over)


OPTS = DiagnoseOptions(samples=64, batch_size=32, probes=2, top_k=2, iters=6)


def test_diagnose_writes_one_row_per_checkpoint_with_every_metric(tmp_path):
    run = tmp_path / "run"
    train_run(_cfg(), run)
    path = diagnose_run(run, OPTS)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == len(list((run / "checkpoints").glob("step_*.pt")))
    last = rows[-1]
    for key in (
        "grad_eff_grad_norm",
        "grad_snr",
        "angle_to_init",
        "step_angle_mean",
        "layer_angles",
        "layer_elr",
        "trace",
        "effective_trace",
        "sharpness_eff",
    ):
        assert key in last, key
    assert last["angle_to_init"] > 0
    assert len(last["top_eigenvalues"]) == 2
    assert last["top_eigenvalues"][0] >= last["top_eigenvalues"][1]


def test_diagnose_leaves_the_run_files_untouched(tmp_path):
    run = tmp_path / "run"
    train_run(_cfg(), run)
    before = (run / "metrics.jsonl").read_text()
    diagnose_run(run, DiagnoseOptions(what=("angles",), samples=64, batch_size=32))
    assert (run / "metrics.jsonl").read_text() == before


def test_step_angle_matches_elr_times_effective_gradient_on_the_sphere(tmp_path):
    # tan(dtheta) = ELR * ||g_eff|| (docs/science.md#projected-sgd-on-the-sphere): the mean
    # per-step angle is of that size.
    run = tmp_path / "run"
    train_run(_cfg(**{"data.batch_size": 128}), run)  # full batch: the step gradient is known
    row = [
        json.loads(x)
        for x in diagnose_run(
            run, DiagnoseOptions(what=("grad", "angles"), samples=128, batch_size=128)
        )
        .read_text()
        .splitlines()
    ][-1]
    predicted = row["elr"] * row["grad_eff_grad_norm"]
    assert row["step_angle_mean"] == pytest.approx(predicted, rel=0.05)


def test_online_diagnostics_follow_the_record_schedule(tmp_path):
    run = tmp_path / "run"
    cfg = _cfg(**{"train.diagnose": "grad", "train.diagnose_every": 2})
    train_run(cfg, run, hooks=hooks_for(cfg))
    diag = read_jsonl(run / "diagnostics.jsonl")
    records = read_jsonl(run / "metrics.jsonl")
    assert [d["step"] for d in diag] == [r["step"] for r in records][::2]


def test_online_diagnostics_without_their_hook_is_a_clear_error(tmp_path):
    cfg = _cfg(**{"train.diagnose": "grad"})
    with pytest.raises(ValueError, match="hooks_for"):
        train_run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_packed_member_gets_the_same_online_diagnostics_as_its_single_run(tmp_path):
    over = {"train.diagnose": "grad,angles", "model.width": 8, "optim.momentum": 0.5}
    cfgs = [_cfg(**over | {"optim.elr": e, "train.seed": s}) for s, e in enumerate((1e-2, 3e-2))]
    train_ensemble(cfgs, [tmp_path / "a", tmp_path / "b"], hooks=hooks_for(cfgs[0]))
    train_run(cfgs[1], tmp_path / "single", hooks=hooks_for(cfgs[1]))
    packed = read_jsonl(tmp_path / "b" / "diagnostics.jsonl")
    single = read_jsonl(tmp_path / "single" / "diagnostics.jsonl")
    assert [d["step"] for d in packed] == [d["step"] for d in single]
    for a, b in zip(packed, single):
        for key in ("grad_loss", "grad_eff_grad_norm", "angle_to_init", "step_angle_mean"):
            assert a[key] == pytest.approx(b[key], rel=1e-7, abs=1e-10), key


def test_cli_rejects_an_unknown_metric_with_exit_2(tmp_path, capsys):
    run = tmp_path / "run"
    train_run(_cfg(), run)
    assert main(["diagnose", str(run), "--what", "grad,hessian"]) == 2
    assert "hessian" in capsys.readouterr().err


def test_parse_what_accepts_the_documented_names():
    assert parse_what("grad, curvature") == ("grad", "curvature")


def test_diagnosing_a_sweep_adds_the_sharpness_figure_to_its_report(tmp_path):
    from spherelab.sweep.run import run_sweep
    from spherelab.sweep.spec import SweepSpec

    spec = SweepSpec(
        elrs=(1e-3, 1e-1),
        model="mlp_si",
        dataset="synthetic:20:128",
        epochs=3,
        overrides={"model.width": 8, "train.records": 3, "train.device": "cpu"},
    )
    run_sweep(spec, tmp_path / "s", progress=False)
    assert (
        main(
            [
                "diagnose",
                str(tmp_path / "s"),
                "--what",
                "curvature",
                "--epochs",
                "last",
                "--samples",
                "64",
                "--iters",
                "5",
                "--probes",
                "2",
                "--top-k",
                "2",
            ]
        )
        == 0
    )
    assert (tmp_path / "s" / "figures" / "sharpness_vs_stability.png").exists()
    for run in (tmp_path / "s" / "runs").iterdir():
        assert len(read_jsonl(run / "diagnostics.jsonl")) == 1


def test_offline_diagnostics_at_a_checkpoint_equal_the_online_ones(tmp_path):
    cfg = _cfg(**{"train.diagnose": "grad,angles", "model.width": 8})
    train_run(cfg, tmp_path / "run", hooks=hooks_for(cfg))
    online = read_jsonl(tmp_path / "run" / "diagnostics.jsonl")
    offline = read_jsonl(diagnose_run(tmp_path / "run", DiagnoseOptions(what=("grad", "angles"))))
    assert [r["step"] for r in offline] == [r["step"] for r in online]
    for a, b in zip(online, offline):
        assert a["step_angle_mean"] == pytest.approx(b["step_angle_mean"], rel=1e-9), a["step"]
        assert a["grad_loss"] == pytest.approx(b["grad_loss"], rel=1e-9), a["step"]
