"""spherelab's optimizer, losses, schedules and ghost-batch step compute the paper's updates.

Every check of tests/_parity_training.py (momentum 0 and 0.9 in the paper's style, global and
per-filter spheres in the paper's ELR unit, the squared loss, weight decay with a trained
head, noninvlr, the c- and cosine schedules, full-batch GD with ghost BatchNorm) trains the
paper's ConvNet-SI for 50 steps in float64. The committed fixture holds the official
trajectories (written by results/scripts/parity_training.py from the paper's code); the live
tests run the paper's code itself when it is there (SPHERELAB_OFFICIAL, default: the checkout
beside this repository).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch
from _official import OFFICIAL_DIR, load_official
from _parity_training import (
    CHECKS,
    initial_model,
    max_abs_diff,
    official_model,
    official_run,
    probes,
    spherelab_run,
)

FIXTURE = Path(__file__).parent / "fixtures" / "parity" / "training.json"
TOL = 1e-12
BY_NAME = {c.name: c for c in CHECKS}


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))["checks"]


@pytest.fixture(scope="module")
def official():
    path = Path(os.environ.get("SPHERELAB_OFFICIAL", OFFICIAL_DIR))
    if not (path / "train.py").is_file():
        pytest.skip(f"the paper's code is not at {path} (set SPHERELAB_OFFICIAL); fixtures only")
    return load_official(path)


def _close_to_probes(mine: list[list[float]], theirs: list[list[float]]) -> float:
    """Largest probe difference, relative to the probe's size where that is above 1."""
    return max(
        abs(a - b) / max(1.0, abs(b)) for ra, rb in zip(mine, theirs) for a, b in zip(ra, rb)
    )


def test_the_fixture_holds_every_check(reference):
    assert set(reference) == set(BY_NAME)
    assert all(len(r["probes"]) == BY_NAME[n].epochs + 1 for n, r in reference.items())


@pytest.mark.parametrize("name", list(BY_NAME))
def test_spherelab_follows_the_official_trajectory_in_the_fixture(name, reference):
    mine = probes(spherelab_run(BY_NAME[name], initial_model()))
    assert _close_to_probes(mine, reference[name]["probes"]) < TOL


@pytest.mark.parametrize(
    "name, change",
    [
        ("global_momentum0.9", {"momentum_style": "tangent"}),
        ("per_filter_momentum0", {"elr_unit": "sphere"}),
        ("weight_decay_trained_head_momentum0.9", {"sphere_weight_decay": 0.0}),
        ("weight_decay_trained_head_momentum0.9", {"others_lr": "own"}),
        ("c_schedule", {"schedule": "constant"}),
        ("cosine_schedule", {"schedule": "cosine"}),
    ],
)
def test_the_fixture_tells_a_different_algorithm_apart(name, change, reference):
    check = BY_NAME[name]
    other = dataclasses.replace(check, optim={**check.optim, **change})
    mine = probes(spherelab_run(other, initial_model()))
    assert _close_to_probes(mine, reference[name]["probes"]) > 1e-6


def test_the_fixture_tells_another_squared_loss_apart(reference):
    other = dataclasses.replace(BY_NAME["squared_loss"], loss="mse")
    mine = probes(spherelab_run(other, initial_model()))
    assert _close_to_probes(mine, reference["squared_loss"]["probes"]) > 1e-6


def test_the_stand_in_network_holds_the_official_initial_weights(official):
    theirs, mine = official_model(official).state_dict(), initial_model().state_dict()
    assert list(theirs) == list(mine)
    assert all(torch.equal(theirs[k], mine[k]) for k in theirs)


@pytest.mark.parametrize("name", ["global_momentum0.9", "per_filter_momentum0.9", "squared_loss"])
def test_spherelab_follows_the_official_code_live(name, official):
    check = BY_NAME[name]
    net = official_model(official)
    theirs = official_run(check, net, official)
    assert max_abs_diff(theirs, spherelab_run(check, net)) < TOL


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BY_NAME))
def test_every_check_follows_the_official_code_live(name, official):
    check = BY_NAME[name]
    net = official_model(official)
    assert max_abs_diff(official_run(check, net, official), spherelab_run(check, net)) < TOL
