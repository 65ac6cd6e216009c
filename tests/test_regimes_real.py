"""The classifier on real short runs: an MLP-SI on MNIST-1D shows all three regimes."""

from spherelab.sweep.files import read_summary
from spherelab.sweep.run import run_sweep
from spherelab.sweep.spec import SweepSpec


def test_real_short_runs_show_the_three_regimes_in_elr_order(tmp_path):
    spec = SweepSpec(
        elrs=(1e-3, 1e-2, 3e-2, 1.0),
        model="mlp_si",
        dataset="mnist1d",
        epochs=100,  # a convergence label needs >= 50 (regimes.MIN_CONVERGENCE_EPOCH)
        overrides={
            "model.width": 32,
            "data.train_subset": 500,
            "data.batch_size": 50,
            "train.records": 12,
            "train.device": "cpu",
        },
    )
    rows = read_summary(run_sweep(spec, tmp_path, progress=False, report=False, pack=4))
    regimes = [r["regime"] for r in rows]
    assert regimes == ["convergence", "chaotic_equilibrium", "chaotic_equilibrium", "divergence"]
    loss = [float(r["train_loss"]) for r in rows]
    assert loss[1] < loss[2]  # regime 2: the stationary loss rises with the ELR
    assert float(rows[-1]["train_acc"]) < 0.2  # regime 3: chance accuracy (10 classes)
