"""Schedule factors: constant, piecewise-constant and cosine, and how the engine applies them."""

import itertools
import math

import pytest

from spherelab.config import Config
from spherelab.train.schedules import constant, cosine, make_schedule, piecewise


def test_constant_schedule_is_one_everywhere():
    factor = constant()
    assert {factor(e) for e in (0.0, 0.5, 3.0, 1e6)} == {1.0}


def test_piecewise_switches_exactly_at_each_milestone():
    factor = piecewise([2.0, 5.0], [0.1, 0.01])
    assert factor(0.0) == 1.0 and factor(1.999) == 1.0
    assert factor(2.0) == 0.1 and factor(4.999) == 0.1
    assert factor(5.0) == 0.01 and factor(100.0) == 0.01


@pytest.mark.parametrize(
    "milestones, factors", [([1.0], [0.1, 0.2]), ([3.0, 1.0], [0.1, 0.2]), ([1.0], [0.0])]
)
def test_piecewise_rejects_bad_milestones_and_factors(milestones, factors):
    with pytest.raises(ValueError):
        piecewise(milestones, factors)


def test_cosine_runs_from_one_to_the_final_factor_through_the_midpoint():
    factor = cosine(10.0, final_factor=0.2)
    assert factor(0.0) == pytest.approx(1.0)
    assert factor(5.0) == pytest.approx(0.6)  # halfway on the half-cosine
    assert factor(10.0) == pytest.approx(0.2)
    assert factor(20.0) == pytest.approx(0.2)  # clamped after the end
    values = [factor(e / 4) for e in range(41)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_make_schedule_cosine_keeps_the_elr_positive_at_the_end():
    factor = make_schedule("cosine", 8.0)
    assert 0 < factor(8.0) < 1e-2
    assert factor(4.0) == pytest.approx(0.5 * (1 + 1e-3))


def test_linear_decay_holds_a_quarter_then_falls_linearly_per_epoch():
    factor = make_schedule("linear_decay", 10.0, factors=[0.1])
    t = [(e + 1) / 11 for e in range(10)]  # epoch e of 10 takes t = (e + 1) / (10 + 1)
    assert [factor(float(e)) for e in range(2)] == [1.0, 1.0]  # t <= 1/4
    for e in range(2, 10):
        assert factor(float(e)) == pytest.approx(0.1 + 0.9 * (1 - t[e]) / 0.75, rel=1e-15)
        assert factor(e + 0.99) == factor(float(e))  # constant within an epoch
    values = [factor(e / 4) for e in range(40)]
    assert all(a >= b for a, b in itertools.pairwise(values))
    assert factor(9.0) > 0.1  # the final factor is reached one epoch after the end


@pytest.mark.parametrize("factors", [[], [0.0], [0.1, 0.2]])
def test_linear_decay_needs_one_positive_final_factor(factors):
    with pytest.raises(ValueError, match="schedule_factors=\\[0.01\\]"):
        make_schedule("linear_decay", 10.0, factors=factors)


def test_cosine_epoch_is_the_half_cosine_at_each_epoch_start_and_stays_positive():
    factor = make_schedule("cosine_epoch", 4.0)
    expected = [1.0, (1 + math.sqrt(0.5)) / 2, 0.5, (1 - math.sqrt(0.5)) / 2]
    for e, want in enumerate(expected):
        assert factor(float(e)) == pytest.approx(want, rel=1e-15, abs=1e-16)
        assert factor(e + 0.5) == factor(float(e))
    assert factor(3.99) > 0


def test_make_schedule_rejects_an_unknown_name():
    with pytest.raises(ValueError, match="linear"):
        make_schedule("linear", 10.0)


@pytest.mark.parametrize("mode", ["sphere", "conventional"])
def test_the_engine_applies_the_piecewise_factor_to_the_recorded_rate(tmp_path, mode):
    from spherelab.io import read_jsonl
    from spherelab.train.engine import train_run

    cfg = Config().with_overrides(
        {
            "model.name": "mlp_si",
            "model.width": 8,
            "data.name": "synthetic:12:64:32:3",
            "data.batch_size": 32,
            "train.epochs": 4,
            "train.records": 5,
            "train.record_schedule": "linear",
            "train.checkpoints": "none",
            "optim.mode": mode,
            "optim.elr": 1e-2,
            "optim.lr": 0.05,
            "optim.schedule": "piecewise",
            "optim.schedule_milestones": [2.0],
            "optim.schedule_factors": [0.1],
        }
    )
    train_run(cfg, tmp_path / mode, resume=False)
    rows = read_jsonl(tmp_path / mode / "metrics.jsonl")
    key, base = ("elr", 1e-2) if mode == "sphere" else ("lr", 0.05)
    by_epoch = {r["epoch"]: r[key] for r in rows}
    assert math.isclose(by_epoch[1.0], base)
    assert math.isclose(by_epoch[3.0], 0.1 * base)
