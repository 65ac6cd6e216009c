"""Reference numbers of the paper's four networks, computed by the paper's own code.

Usage: python results/scripts/parity_networks.py OFFICIAL_PATH [OUT_JSON]
(OUT_JSON defaults to tests/fixtures/parity/networks.json).

For each case (network, width, ConvNet depth) the paper's train.py is run with --epochs 0 on a
tiny synthetic loader, which writes its initialization (seed 1, the paper's head) as
checkpoint-0.pt. From those weights, in float64, the fixture keeps:

- ``init``: per state_dict tensor, its sum, its sum of squares and its dot product with a fixed
  random tensor (enough to see any 1e-12 change of the weights);
- ``train``/``eval``: the logits of fixed inputs in train and in eval mode, after two
  train-mode forwards that move the BatchNorm running statistics off their initial values.

tests/test_parity_networks.py checks spherelab's own init at seed 1 against these numbers, and
(when the paper's code is present) recomputes them live and checks ``from_official``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from _official import load_official  # noqa: E402
from _official_runs import paper_flags, run_official_training, tiny_loaders  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "parity" / "networks.json"
# (official network, width, ConvNet --depth); the Af twins are built without --same_last_layer
CASES = [
    ("ConvNetSI", 2, 3),
    ("ConvNetSI", 4, 3),
    ("ConvNetSI", 2, 1),
    ("ConvNetSI", 2, 5),
    ("ConvNetSIAf", 2, 3),
    ("ConvNetSIAf", 4, 3),
    ("ResNet18SI", 2, 3),
    ("ResNet18SI", 4, 3),
    ("ResNet18SIAf", 2, 3),
    ("ResNet18SIAf", 4, 3),
]
N_INPUTS = 4


def case_key(name: str, width: int, depth: int) -> str:
    return f"{name}-w{width}-d{depth}"


def inputs() -> tuple[list[Tensor], Tensor]:
    """Two warm-up batches and the measured batch (float64, CIFAR shape)."""
    gen = torch.Generator().manual_seed(2022)
    warm = [torch.randn(6, 3, 32, 32, generator=gen, dtype=torch.float64) for _ in range(2)]
    return warm, torch.randn(N_INPUTS, 3, 32, 32, generator=gen, dtype=torch.float64)


def projections(state: dict[str, Tensor]) -> list[list[float]]:
    """[sum, sum of squares, dot with a fixed N(0,1) tensor] per tensor, in state_dict order."""
    out = []
    for i, tensor in enumerate(state.values()):
        t = tensor.detach().double()
        probe = torch.randn(t.shape, generator=torch.Generator().manual_seed(i), dtype=t.dtype)
        out.append([float(t.sum()), float(t.square().sum()), float((t * probe).sum())])
    return out


def outputs(model: nn.Module) -> dict[str, list[list[float]]]:
    """Logits in train and eval mode after the warm-up forwards (model in float64)."""
    warm, x = inputs()
    with torch.no_grad():
        model.train()
        for batch in warm:
            model(batch)
        train = model(x)
        model.eval()
        evaluated = model(x)
    return {"train": train.tolist(), "eval": evaluated.tolist()}


def official_init(modules: dict[str, Any], name: str, width: int, depth: int) -> nn.Module:
    """The paper's network as its train.py initializes it (checkpoint-0.pt of --epochs 0)."""
    with tempfile.TemporaryDirectory() as tmp:
        flags = paper_flags(name, width, Path(tmp), epochs=0)
        flags[flags.index("--depth") + 1] = str(depth)
        if name.endswith("Af"):
            flags.remove("--same_last_layer")
        run = run_official_training(modules, flags, tiny_loaders())
        state = torch.load(run / "checkpoint-0.pt", weights_only=False)["state_dict"]
    cfg = getattr(modules["nets"], name)
    extra: dict[str, Any] = {"init_channels": width}
    if name.startswith("ConvNet"):
        extra.update(max_depth=depth)
    model = cfg.base(*cfg.args, num_classes=10, **cfg.kwargs, **extra)
    model.load_state_dict(state)
    return model


def reference(official_path: str | Path) -> dict[str, Any]:
    """Every case's init projections and outputs, from the paper's code."""
    modules = load_official(official_path)
    cases = {}
    for name, width, depth in CASES:
        model = official_init(modules, name, width, depth)
        state = model.state_dict()
        cases[case_key(name, width, depth)] = {
            "init": projections(state),
            **outputs(model.double()),
        }
    return {"seed": 1, "cases": cases}


def main() -> None:
    official = sys.argv[1]
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else FIXTURE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(reference(official), indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
