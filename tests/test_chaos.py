"""The chaos meter (spherelab.chaos): the tangent map is the exact Jacobian of a step, the twins
agree with it, the toy's exponent matches its theory, and the CLI writes λ into run files."""

import itertools
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from spherelab.chaos import (
    LyapunovOptions,
    estimate,
    tangent_trace,
    twin_trace,
)
from spherelab.cli import main
from spherelab.config import Config, apply_overrides
from spherelab.sphere import SphereSGD
from spherelab.toy import QuadraticSphereToy
from spherelab.toy import theory as toy_theory
from spherelab.toy.chaos import measured_lyapunov, measured_threshold
from spherelab.train import train_run


def _net(seed: int = 0) -> tuple[nn.Module, SphereSGD, list]:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(5, 12, bias=False),
        nn.BatchNorm1d(12, affine=False),
        nn.ReLU(),
        nn.Linear(12, 12, bias=False),
        nn.BatchNorm1d(12, affine=False),
        nn.ReLU(),
        nn.Linear(12, 3),
    ).double()
    model[6].requires_grad_(False)
    si = [model[0].weight, model[3].weight]
    return model, SphereSGD(si, elr=0.3), si


def _data(steps: int, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        yield (
            torch.randn(16, 5, generator=gen, dtype=torch.float64),
            torch.randint(0, 3, (16,), generator=gen),
        )


def _loss_of(model):
    return lambda b: nn.functional.cross_entropy(model(b[0]), b[1])


def test_the_tangent_map_is_the_derivative_of_one_sphere_step():
    model, opt, si = _net()
    batch = next(_data(1))
    w0 = [p.detach().clone() for p in si]
    v = [torch.randn_like(p) for p in si]
    c = sum((a * b).sum() for a, b in zip(v, w0)) / sum((b * b).sum() for b in w0)
    v = [a - c * b for a, b in zip(v, w0)]
    size = math.sqrt(sum(float((a * a).sum()) for a in v))
    trace = tangent_trace(_loss_of(model), si, opt, iter([batch]), 1, start=[v])
    w1 = [p.detach().clone() for p in si]
    eps = 1e-7
    with torch.no_grad():
        for p, a, b in zip(si, w0, v):
            p.copy_(a + eps * b / size)
    opt.zero_grad()
    nn.functional.cross_entropy(model(batch[0]), batch[1]).backward()
    opt.step()
    moved = math.sqrt(sum(float(((p.detach() - a) ** 2).sum()) for p, a in zip(si, w1)))
    assert float(trace.log_growth[0, 0]) == pytest.approx(math.log(moved / eps), abs=1e-6)


def test_float64_twins_agree_with_the_tangent_map_step_by_step():
    model, opt, si = _net()
    names = ["0.weight", "3.weight"]

    def params_of(m):
        named = dict(m.named_parameters())
        return [named[n] for n in names]

    def step(m, o, b):
        o.zero_grad()
        nn.functional.cross_entropy(m(b[0]), b[1]).backward()
        o.step()

    twins = twin_trace(step, model, opt, params_of, _data(40), 40, angle=1e-8)
    # the twins start along a random direction from generator seed 0; so does the tangent map
    tangent = tangent_trace(_loss_of(model), si, opt, _data(40), 40)
    assert torch.allclose(twins.log_growth, tangent.log_growth, atol=1e-5)
    assert torch.allclose(twins.step_angles, tangent.step_angles, atol=1e-12)


def test_momentum_and_finer_spheres_are_refused_with_the_reason():
    model, _, si = _net()
    for kwargs, word in (({"momentum": 0.9}, "momentum"), ({"sphere": "per_tensor"}, "sphere")):
        opt = SphereSGD(si, elr=0.1, **kwargs)
        with pytest.raises(ValueError, match=word):
            tangent_trace(_loss_of(model), si, opt, _data(1), 1)


def test_the_error_bar_is_the_scatter_of_window_means():
    from spherelab.chaos import Trace

    growth = torch.tensor([[1.0, 1.0, 3.0, 3.0]], dtype=torch.float64)
    est = estimate(Trace(growth, torch.zeros(4, dtype=torch.float64)), windows=2)
    assert est.lyapunov == 2.0
    assert est.err == pytest.approx(math.sqrt(2) / math.sqrt(2))


def test_full_batch_gd_on_the_toy_gives_the_exact_exponent():
    toy = QuadraticSphereToy(d=12, n=5, seed=0, batch_size=5)
    c = toy_theory.span_coordinates(toy.A)
    mu = np.linalg.eigvalsh(c.T @ c / 5)
    rows = torch.arange(5)
    for eta in (0.3 * 2 / mu.max(), 1.4 * 2 / mu.max()):
        exact = float(np.max(np.log(np.abs(1 - eta * mu))))
        est = measured_lyapunov(toy, eta, 400, burn_in=200, batches=itertools.repeat(rows))
        assert est.lyapunov == pytest.approx(exact, abs=1e-6)


@pytest.mark.slow
def test_the_toy_exponent_matches_its_theory_within_5_percent():
    toy = QuadraticSphereToy(d=20, n=10, seed=0)
    eta1, _ = toy.lyapunov_threshold()
    etas = [0.5 * eta1, 1.5 * eta1, 2.0 * eta1]
    theory = toy.lyapunov_exponent(etas, steps=20_000)
    for eta, expected in zip(etas, theory):
        got = np.mean([measured_lyapunov(toy, eta, 8000, seed=s).lyapunov for s in range(3)])
        assert got == pytest.approx(expected, rel=0.05)


@pytest.mark.slow
def test_the_toy_zero_crossing_matches_the_predicted_threshold():
    toy = QuadraticSphereToy(d=20, n=10, seed=0)
    eta1, _ = toy.lyapunov_threshold()
    crossing = measured_threshold(toy, 0.7 * eta1, 1.4 * eta1, steps=8000, rounds=7)
    assert crossing == pytest.approx(eta1, rel=0.05)


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
    }
    return apply_overrides(Config(), base | over)


def test_diagnose_lyapunov_writes_the_summary_keys(tmp_path, capsys):
    run = tmp_path / "run"
    train_run(_cfg(), run)
    assert main(["diagnose", str(run), "--what", "lyapunov", "--lyapunov-steps", "20"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert math.isfinite(summary["lyapunov"]) and summary["lyapunov_err"] > 0
    assert 0 < summary["step_angle_mean"] < math.pi / 2
    assert "lyapunov" in capsys.readouterr().out
    # the measured exponent votes in the run's label (the classifier saw it)
    assert summary["regime_stats"]["lyapunov"] == summary["lyapunov"]


def test_lyapunov_options_refuse_bad_values():
    with pytest.raises(ValueError, match="method"):
        LyapunovOptions(method="finite")
    with pytest.raises(ValueError, match="steps"):
        LyapunovOptions(steps=0)


def _rows(values):
    return [
        {"elr": e, "lyapunov": lam, "lyapunov_err": err, "step_angle_mean": ang, "regime": "x"}
        for e, lam, err, ang in values
    ]


def test_the_lyapunov_bracket_is_where_lambda_turns_reliably_positive_for_good():
    from spherelab.chaos_boundary import lyapunov_boundary

    rows = _rows(
        [
            (1e-4, 0.0, 0.001, 0.01),
            (1e-3, 0.02, 0.001, 0.02),  # positive, but a larger ELR is not: not the bracket
            (3e-3, 0.001, 0.001, 0.05),  # within 2 sigma of 0
            (1e-2, 0.05, 0.005, 0.2),
            (1e-1, 1.0, 0.01, 1.5),
        ]
    )
    b = lyapunov_boundary(rows)
    assert (b.lo, b.hi) == (3e-3, 1e-2)
    assert lyapunov_boundary(rows[:3]) is None


def test_seeds_of_one_elr_are_pooled_with_their_scatter():
    from spherelab.chaos_boundary import per_elr

    (point,) = per_elr(_rows([(1e-2, 0.1, 0.0, 0.1), (1e-2, 0.3, 0.0, 0.3)]))
    assert point.lyapunov == pytest.approx(0.2)
    assert point.err == pytest.approx(math.sqrt(0.02 / 2))
    assert point.runs == 2


def test_the_step_angle_bracket_is_where_steps_exceed_45_degrees():
    from spherelab.chaos_boundary import step_angle_boundary

    rows = _rows([(1e-3, 0.0, 0.1, 0.01), (1e-2, 0.1, 0.1, 0.3), (1e-1, 1.0, 0.1, 1.5)])
    b = step_angle_boundary(rows)
    assert (b.lo, b.hi) == (1e-2, 1e-1)


def test_bisection_on_lambda_adds_the_midpoint_of_the_bracket(tmp_path, monkeypatch):
    from spherelab.io import read_csv, write_csv
    from spherelab.sweep import lyapunov as sweep_lyapunov
    from spherelab.sweep.spec import SweepSpec
    from tests.test_sweep import fake_runner

    def fake_lambda(out, opts):  # λ > 0 from ELR 5e-3 on, exactly
        path = out / "summary.csv"
        rows = read_csv(path)
        for row in rows:
            elr = float(row["elr"])
            row.update(lyapunov=str(elr - 5e-3), lyapunov_err="0", step_angle_mean="0.1")
        write_csv(path, rows, list(rows[0]))
        return path

    monkeypatch.setattr(sweep_lyapunov, "lyapunov_sweep", fake_lambda)
    spec = SweepSpec(elrs=(1e-3, 1e-2, 1e-1), epochs=2, name="t")
    sweep_lyapunov.run_lyapunov_sweep(
        spec, tmp_path, refine=2, runner=fake_runner, report=False, progress=False
    )
    from spherelab.chaos_boundary import lyapunov_boundary

    elrs = json.loads((tmp_path / "sweep.json").read_text())["spec"]["elrs"]
    assert len(elrs) == 5  # two rounds of bisection on λ (besides the regime refinement)
    b = lyapunov_boundary(read_csv(tmp_path / "summary.csv"))
    assert b.lo < 5e-3 <= b.hi and b.hi / b.lo < 10**0.25
    assert b.hi in elrs or b.lo in elrs


def test_sweep_lyapunov_writes_the_columns_and_the_figure(tmp_path):
    out = tmp_path / "s"
    args = ["sweep", "--model", "mlp_si", "--dataset", "synthetic:20:128", "--elrs", "1e-3,1"]
    args += ["--epochs", "2", "--set", "model.width=8", "--set", "train.records=3"]
    args += ["--out", str(out), "--lyapunov", "--lyapunov-steps", "8"]
    assert main(args) == 0
    from spherelab.io import read_csv

    rows = read_csv(out / "summary.csv")
    assert all(math.isfinite(float(r["lyapunov"])) for r in rows)
    assert float(rows[1]["step_angle_mean"]) > float(rows[0]["step_angle_mean"])
    assert (out / "figures" / "lyapunov.png").exists()


def test_diagnose_lyapunov_refuses_a_momentum_run_with_exit_2(tmp_path, capsys):
    run = tmp_path / "run"
    train_run(_cfg(**{"optim.momentum": 0.5}), run)
    assert main(["diagnose", str(run), "--what", "lyapunov", "--lyapunov-steps", "8"]) == 2
    assert "momentum" in capsys.readouterr().err
    assert "lyapunov" not in json.loads((run / "summary.json").read_text())
