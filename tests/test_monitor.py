"""RegimeMonitor in a user's own loop: its records against direct measurements, the run
directory the lens reads, the live map regime, the optimizer hook, and its refusals."""

import csv
import json
import math
import re
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from spherelab.cli import main
from spherelab.io import read_jsonl
from spherelab.metrics.geometry import (
    angle_from_sides,
    angle_tensor,
    equilibrium_angle,
    equilibrium_elr,
)
from spherelab.monitor import RegimeMonitor
from spherelab.regimes import REGIMES
from spherelab.studies.conventional import angle_table, run_diagnostics
from spherelab.studies.lens import band_of, regime_bands, write_lens

MAP = {1e-4: "convergence", 1e-3: "convergence", 1e-2: "chaotic_equilibrium", 1e-1: "divergence"}


def _net(dtype=torch.float32):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(6, 16), nn.BatchNorm1d(16, affine=False), nn.ReLU(), nn.Linear(16, 3)
    ).to(dtype)
    net[3].requires_grad_(False)  # a frozen head: the SI weights are the first layer's
    return net


def _si(net):
    return [net[0].weight, net[0].bias]


def _data(dtype=torch.float32):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(96, 6, generator=gen, dtype=dtype), torch.randint(0, 3, (96,), generator=gen)


def _train(net, opt, monitor, steps, use_hook=False):
    x, y = _data(next(net.parameters()).dtype)
    for t in range(steps):
        idx = torch.arange(t * 16, t * 16 + 16) % 96
        out = net(x[idx])
        loss = F.cross_entropy(out, y[idx])
        opt.zero_grad()
        loss.backward()
        if use_hook:  # the hook records inside opt.step(): the loss must be in before it
            monitor.observe(loss)
            opt.step()
        else:
            opt.step()
            monitor.step(loss)


def _sweep(root):
    root.mkdir(parents=True)
    with (root / "summary.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["elr", "seed", "regime", "status", "run_dir"])
        writer.writeheader()
        for elr, regime in MAP.items():
            writer.writerow(
                {"elr": elr, "seed": 0, "regime": regime, "status": "finished", "run_dir": ""}
            )
    return root


def test_records_equal_the_quantities_measured_directly_in_float64():
    net = _net(torch.float64)
    opt = torch.optim.SGD(net.parameters(), lr=0.2, momentum=0.5, weight_decay=1e-2)
    monitor = RegimeMonitor(net, opt, steps_per_epoch=3, si=_si(net))
    x, y = _data(torch.float64)
    grads, angles = [], []
    for t in range(3):
        idx = torch.arange(t * 16, t * 16 + 16)
        before = torch.cat([p.detach().flatten() for p in _si(net)])
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        after = torch.cat([p.detach().flatten() for p in _si(net)])
        grad = torch.cat([p.grad.flatten() for p in _si(net)])
        grads.append(float(grad.norm() * before.norm()))
        angles.append(float(torch.arccos(before @ after / (before.norm() * after.norm()))))
        monitor.step(loss)
    row = monitor.records[-1]
    norm = float(after.norm())
    assert len(monitor.records) == 1 and row["step"] == 3 and row["epoch"] == 1.0
    assert row["si_norm"] == pytest.approx(norm, rel=1e-12)
    assert row["elr"] == pytest.approx(0.2 / norm**2, rel=1e-12)
    assert row["elr_effective"] == pytest.approx(0.2 / norm**2 / 0.5, rel=1e-12)
    assert row["eff_grad_norm"] == pytest.approx(sum(grads) / 3, rel=1e-10)
    assert row["angle_step"] == pytest.approx(sum(angles) / 3, rel=1e-6)
    assert row["angle_step_max"] == pytest.approx(max(angles), rel=1e-6)
    assert row["angle_equilibrium"] == pytest.approx(math.sqrt(2 * 0.2 * 1e-2 / 1.5))
    assert set(row["layer_norms"]) == {"0.weight", "0.bias"}


def test_at_the_equilibrium_elr_the_step_angle_equals_the_equilibrium_angle():
    lr, wd, mu, grad = 0.1, 5e-4, 0.9, 3.0
    elr = equilibrium_elr(lr, wd, mu, grad)
    row = {"epoch": 1.0, "step": 1, "elr": elr, "eff_grad_norm": grad, "lr": lr, "angle": 0.0}
    got = angle_table([row], wd, mu)[0]
    assert math.tan(got["angle_step_grad"]) == pytest.approx(equilibrium_angle(lr, wd, mu))


def test_the_run_directory_is_read_by_the_lens_and_the_live_regime_follows_the_map(tmp_path):
    sweep = _sweep(tmp_path / "sweep")
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-3)
    with RegimeMonitor(net, opt, tmp_path / "run", steps_per_epoch=6, sweep=sweep) as monitor:
        _train(net, opt, monitor, 30)
    bands = regime_bands(list(MAP.items()))
    assert [r["step"] for r in monitor.records] == [6, 12, 18, 24, 30]
    for row in monitor.records:
        assert row["map_regime"] == band_of(row["elr_effective"], bands)
    assert monitor.regime == monitor.records[-1]["map_regime"]
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert {k: cfg["optim"][k] for k in ("mode", "lr", "momentum")} == {
        "mode": "conventional",
        "lr": 0.05,
        "momentum": 0.9,
    }
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["step"] == 30
    diag = run_diagnostics(read_jsonl(tmp_path / "run" / "metrics.jsonl"), cfg["optim"])
    assert diag["equilibrium"]["angle_predicted"] == pytest.approx(
        monitor.records[-1]["angle_equilibrium"]
    )
    lens = write_lens(tmp_path / "run", sweep)
    assert lens.is_file()
    assert main(["report", str(sweep), "--lens", str(tmp_path / "run")]) == 0


def test_diagnose_refuses_a_monitor_run_with_a_message_that_names_the_lens(tmp_path, capsys):
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    with RegimeMonitor(net, opt, tmp_path / "run", steps_per_epoch=2) as monitor:
        _train(net, opt, monitor, 4)
    assert main(["diagnose", str(tmp_path / "run")]) == 2
    assert "--lens" in capsys.readouterr().err


def test_the_optimizer_hook_records_what_explicit_steps_record():
    rows = []
    for use_hook in (False, True):
        net = _net()
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
        monitor = RegimeMonitor(net, opt, steps_per_epoch=2, si=_si(net))
        if use_hook:
            monitor.attach()
        _train(net, opt, monitor, 4, use_hook=use_hook)
        monitor.detach()
        rows.append(
            [{k: r[k] for k in ("step", "train_loss", "elr", "angle")} for r in monitor.records]
        )
    assert rows[0] == rows[1] and len(rows[0]) == 2


def test_named_groups_are_recorded_beside_the_joint_vector():
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    monitor = RegimeMonitor(
        net, opt, steps_per_epoch=2, si={"w": [net[0].weight], "b": [net[0].bias]}
    )
    _train(net, opt, monitor, 2)
    row = monitor.records[-1]
    assert set(row["groups"]) == {"w", "b"}
    joint = math.sqrt(row["groups"]["w"]["si_norm"] ** 2 + row["groups"]["b"]["si_norm"] ** 2)
    assert row["si_norm"] == pytest.approx(joint, rel=1e-6)


def test_the_monitor_refuses_weights_that_are_not_scale_invariant():
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="not scale-invariant"):
        RegimeMonitor(net, opt, steps_per_epoch=1, si=[net[0].weight, net[3].weight],
                      example_input=_data()[0][:8])  # fmt: skip


def test_the_monitor_refuses_a_directory_that_holds_a_run(tmp_path):
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with RegimeMonitor(net, opt, tmp_path, steps_per_epoch=1) as monitor:
        _train(net, opt, monitor, 1)
    with pytest.raises(ValueError, match="already holds a run"):
        RegimeMonitor(net, opt, tmp_path, steps_per_epoch=1)


@pytest.mark.parametrize("scale", [1e-9, 1e-5, 1e-2, 0.3])
def test_the_angle_from_three_norms_equals_the_angle_between_the_vectors(scale):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(50, dtype=torch.float64, generator=gen)
    # a training step: a tangential move of size `scale` and a radial one 10x smaller
    b = (1 - 0.1 * scale) * a + scale * torch.randn(50, dtype=torch.float64, generator=gen)
    got = angle_from_sides(a.norm(), b.norm(), (a - b).norm())
    assert float(got) == pytest.approx(float(angle_tensor([a], [b])), rel=1e-7, abs=1e-15)
    assert float(angle_from_sides(a.norm(), torch.zeros((), dtype=torch.float64), a.norm())) == 0


def test_the_docs_example_runs_and_its_run_goes_through_the_lens(tmp_path, monkeypatch):
    page = Path(__file__).resolve().parents[1] / "docs" / "monitor.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(page), "exec"), namespace)
    rows = read_jsonl(tmp_path / "out" / "my_run" / "metrics.jsonl")
    assert len(rows) == 12 and all(r["map_regime"] in REGIMES for r in rows)
    assert main(["report", "out/map", "--lens", "out/my_run"]) == 0
    assert (tmp_path / "out" / "my_run" / "lens" / "lens.json").is_file()


def test_a_model_without_si_weights_is_refused_with_the_fix():
    net = nn.Sequential(nn.Linear(6, 3))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="pass them as si="):
        RegimeMonitor(net, opt, steps_per_epoch=1)
