"""spherelab's networks are the paper's: the same initialization at seed 1 and the same outputs
in train and eval mode, in float64, to 1e-12 (docs/paper_parity.md#networks-and-checkpoints).

The committed fixture (tests/fixtures/parity/networks.json, written by
results/scripts/parity_networks.py from the paper's code) is checked always; the paper's code
itself is run live when it is present (SPHERELAB_OFFICIAL, default: the checkout beside this
repository), and those tests skip with the reason otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch
from _official import OFFICIAL_DIR, load_official

from spherelab.models import build_model
from spherelab.official import from_official

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "results" / "scripts" / "parity_networks.py"
OFFICIAL = Path(os.environ.get("SPHERELAB_OFFICIAL", OFFICIAL_DIR))
TOL = 1e-12

_spec = importlib.util.spec_from_file_location("parity_networks", SCRIPT)
assert _spec is not None and _spec.loader is not None
parity = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(parity)
FIXTURE = json.loads(parity.FIXTURE.read_text(encoding="utf-8"))
CASES = [pytest.param(*case, id=parity.case_key(*case)) for case in parity.CASES]

# the spherelab setting equal to each official network under the paper's run-script flags
SPHERELAB = {
    "ConvNetSI": ("convnet_si", {"head_seed": 228, "head_bias": True, "depth_style": "paper"}),
    "ConvNetSIAf": ("convnet_af", {"depth_style": "paper"}),
    "ResNet18SI": ("resnet18_si", {"head_seed": 228}),
    "ResNet18SIAf": ("resnet18_af", {"head_bias": False}),
}

needs_official = pytest.mark.skipif(
    not (OFFICIAL / "train.py").is_file(),
    reason=f"the paper's code is not at {OFFICIAL} (set SPHERELAB_OFFICIAL); "
    "the committed fixture is checked instead",
)


def spherelab_init(name: str, width: int, depth: int) -> torch.nn.Module:
    model_name, kwargs = SPHERELAB[name]
    torch.manual_seed(1)  # as the paper's train.py seeds before building the network
    return build_model(model_name, width=width, depth=depth, **kwargs)


def max_gap(a, b) -> float:
    return float(
        (torch.tensor(a, dtype=torch.float64) - torch.tensor(b, dtype=torch.float64)).abs().max()
    )


@pytest.mark.parametrize("name, width, depth", CASES)
def test_spherelab_init_at_seed_1_is_the_papers_init(name, width, depth):
    expected = FIXTURE["cases"][parity.case_key(name, width, depth)]["init"]
    got = parity.projections(spherelab_init(name, width, depth).state_dict())
    assert len(got) == len(expected)
    assert max_gap(got, expected) <= TOL


@pytest.mark.parametrize("name, width, depth", CASES)
def test_spherelab_outputs_are_the_papers_in_train_and_eval_mode(name, width, depth):
    expected = FIXTURE["cases"][parity.case_key(name, width, depth)]
    got = parity.outputs(spherelab_init(name, width, depth).double())
    for mode in ("train", "eval"):
        assert max_gap(got[mode], expected[mode]) <= TOL, mode


@pytest.fixture(scope="module")
def official():
    return load_official(OFFICIAL)


@needs_official
@pytest.mark.parametrize("name, width, depth", CASES)
def test_spherelab_init_is_bit_for_bit_the_papers_train_py_init(official, name, width, depth):
    paper = parity.official_init(official, name, width, depth).state_dict()
    ours = spherelab_init(name, width, depth).state_dict()
    assert len(paper) == len(ours)
    assert all(torch.equal(a, b) for a, b in zip(paper.values(), ours.values()))


@needs_official
@pytest.mark.parametrize("name, width, depth", CASES)
def test_from_official_equals_the_papers_network_and_the_fixture_holds(
    official, name, width, depth
):
    paper = parity.official_init(official, name, width, depth).double()
    expected = parity.outputs(paper)  # also moves the running statistics
    key = parity.case_key(name, width, depth)
    for mode in ("train", "eval"):
        assert max_gap(expected[mode], FIXTURE["cases"][key][mode]) <= TOL, mode
    ours = from_official(name, paper.state_dict())
    paper_out, ours_out = [], []
    torch.manual_seed(0)
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        for train in (True, False):
            paper.train(train), ours.train(train)
            paper_out.append(paper(x)), ours_out.append(ours(x))
    for a, b in zip(paper_out, ours_out):
        assert float((a - b).abs().max()) <= TOL
    assert any(p.requires_grad for p in ours.head.parameters()) == name.endswith("Af")
