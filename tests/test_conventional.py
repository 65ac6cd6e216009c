"""Equilibrium angles and the spike detector of conventional (weight-decay) training."""

import math

import numpy as np
import pytest

from spherelab.studies.conventional import (
    angle_table,
    equilibrium_summary,
    run_diagnostics,
)
from spherelab.studies.spikes import detect_spikes


def _sawtooth(n_records: int, period: int, first: int, steps_per_record: int = 10):
    """Loss decays, the norm shrinks under weight decay, then a spike resets both."""
    records = []
    for i in range(n_records):
        phase = (i - first) % period if i >= first else i + period
        spike = i >= first and phase == 0
        loss = 2.0 if spike else 1.0 * math.exp(-0.8 * min(phase, 8 + i))
        norm = 10.0 if spike else 10.0 * 0.9**phase
        records.append(
            {"epoch": float(i), "step": i * steps_per_record, "train_loss": loss, "si_norm": norm}
        )
    return records


@pytest.mark.parametrize("period, first, n", [(7, 10, 60), (12, 15, 80)])
def test_periodic_spikes_are_counted_with_their_period(period, first, n):
    report = detect_spikes(_sawtooth(n, period, first))
    expected = len(range(first, n, period))
    assert report.count == expected
    assert report.period_epochs == period
    assert report.period_steps == period * 10
    assert report.onset_epochs[0] == first
    assert report.periodic


def test_a_smooth_decaying_curve_has_no_spike():
    records = [
        {
            "epoch": float(i),
            "step": i,
            "train_loss": 2.3 * math.exp(-0.1 * i) + 1e-3 * math.sin(i),
            "si_norm": 10 * 0.99**i,
        }
        for i in range(80)
    ]
    report = detect_spikes(records)
    assert report.count == 0 and math.isnan(report.period_epochs) and not report.periodic


def test_a_rise_while_the_norm_grows_is_not_a_destabilization():
    records = _sawtooth(60, 7, 10)
    for i, row in enumerate(records):  # norm now grows into every spike
        row["si_norm"] = 1.0 + i
    assert detect_spikes(records).count == 0


def test_tiny_converged_losses_jittering_by_large_ratios_are_not_spikes():
    rng = np.random.default_rng(0)
    records = [
        {
            "epoch": float(i),
            "step": i,
            "train_loss": float(1e-5 * rng.uniform(0.1, 10)),
            "si_norm": 10 * 0.99**i,
        }
        for i in range(60)
    ]
    assert detect_spikes(records).count == 0


def test_spike_detector_names_the_missing_key():
    with pytest.raises(ValueError, match="si_norm"):
        detect_spikes([{"epoch": 0.0, "step": 0, "train_loss": 1.0}])


def _equilibrium_records(lr, wd, mu, grad, n=6):
    """Records whose norm sits exactly at the momentum equilibrium for a given eff. gradient."""
    # angle = ELR * g / sqrt(1 - mu^2) = sqrt(2 lr wd / (1 + mu))  =>  ELR = ...
    elr = math.sqrt(2 * lr * wd / (1 + mu)) * math.sqrt(1 - mu**2) / grad
    norm = math.sqrt(lr / elr)
    return [
        {
            "epoch": float(i),
            "step": 10 * i,
            "lr": lr,
            "elr": lr / norm**2,
            "eff_grad_norm": grad,
            "angle": 0.05,
            "si_norm": norm,
        }
        for i in range(n)
    ]


def test_measured_angle_equals_the_prediction_at_the_norm_equilibrium():
    lr, wd, mu = 0.1, 5e-4, 0.9
    table = angle_table(_equilibrium_records(lr, wd, mu, grad=3.0), wd, mu)
    predicted = math.sqrt(2 * lr * wd / (1 + mu))
    summary = equilibrium_summary(table)
    assert summary["angle_predicted"] == pytest.approx(predicted)
    assert summary["angle_step_grad"] == pytest.approx(math.atan(predicted), rel=1e-12)
    assert summary["angle_step_chord"] == pytest.approx(0.05 / 10)
    assert table[0]["elr_effective"] == pytest.approx(table[0]["elr"] / (1 - mu))
    assert math.isnan(table[0]["angle_step_chord"])


def test_prediction_follows_the_scheduled_lr_of_each_record():
    records = _equilibrium_records(0.1, 1e-3, 0.0, grad=2.0)
    records[-1]["lr"] = 0.025
    table = angle_table(records, 1e-3, 0.0)
    assert table[-1]["angle_predicted"] == pytest.approx(table[0]["angle_predicted"] / 2)


def test_run_diagnostics_reads_lr_wd_and_momentum_from_the_config():
    records = _sawtooth(40, 7, 10)
    for r in records:
        r.update(lr=0.1, elr=1e-3, eff_grad_norm=1.0, angle=0.01)
    out = run_diagnostics(records, {"lr": 0.1, "weight_decay": 1e-3, "momentum": 0.5})
    assert out["spikes"]["count"] == 5 and out["momentum"] == 0.5
    assert out["equilibrium"]["angle_predicted"] == pytest.approx(math.sqrt(2e-4 / 1.5))


def test_angle_table_rejects_momentum_of_one():
    with pytest.raises(ValueError, match="momentum"):
        angle_table(_equilibrium_records(0.1, 1e-3, 0.0, 1.0), 1e-3, 1.0)


def test_a_conventional_lr_wd_sweep_is_summarized_through_the_lens(tmp_path):
    import csv

    from spherelab.studies.conventional import summarize_grid
    from spherelab.sweep.run import run_sweep
    from spherelab.sweep.spec import SweepSpec

    common = {
        "model.width": 8,
        "data.batch_size": 32,
        "train.records": 6,
        "train.record_schedule": "linear",
        "train.checkpoints": "none",
    }
    data = "synthetic:12:96:32:3"
    conv = SweepSpec(
        elrs=(1e-3,),
        model="mlp_si",
        dataset=data,
        epochs=4,
        overrides={**common, "optim.mode": "conventional", "optim.momentum": 0.9},
        axes={"optim.lr": (0.05,), "optim.weight_decay": (1e-3, 5e-2)},
    )
    fixed = SweepSpec(
        elrs=(1e-3, 1e-1, 10.0), model="mlp_si", dataset=data, epochs=4, overrides=common
    )
    run_sweep(conv, tmp_path / "conv", report=False, progress=False)
    run_sweep(fixed, tmp_path / "map", report=False, progress=False)
    path = summarize_grid(tmp_path / "conv", tmp_path / "map", tmp_path / "out")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(float(r["weight_decay"]) for r in rows) == [1e-3, 5e-2]
    for row in rows:
        predicted = math.sqrt(2 * 0.05 * float(row["weight_decay"]) / 1.9)
        assert float(row["angle_predicted"]) == pytest.approx(predicted)
        assert 0.0 <= float(row["lens_agreement"]) <= 1.0 or row["lens_agreement"] == "nan"
        assert (tmp_path / "out" / "lens" / row["run_dir"].split("/")[-1] / "lens.png").is_file()
    assert (tmp_path / "out" / "figures" / "trajectories.svg").is_file()
    assert (tmp_path / "out" / "report.html").is_file()
    no_map = summarize_grid(tmp_path / "conv", None, tmp_path / "no_map")
    with no_map.open(newline="") as handle:
        assert all(r["lens_agreement"] == "nan" for r in csv.DictReader(handle))
    assert not (tmp_path / "no_map" / "lens").exists()


def test_relaxation_steps_is_the_e_folding_time_of_the_squared_norm_under_decay_alone():
    from spherelab.studies.conventional import relaxation_steps

    lr, wd, mu = 0.05, 2e-3, 0.9
    n = relaxation_steps(lr, wd, mu)
    w, v = 1.0, 0.0
    for _ in range(round(n)):  # heavy-ball SGD on the weight-decay term only
        v = mu * v + wd * w
        w -= lr * v
    assert w**2 == pytest.approx(math.exp(-1), rel=0.05)
    assert relaxation_steps(lr, 0.0, mu) == math.inf
