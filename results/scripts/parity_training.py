"""Write tests/fixtures/parity/training.json: the paper's training trajectories, computed by the
paper's own code, as probes per epoch, with spherelab's measured distance from each.

    PYTHONPATH=src python results/scripts/parity_training.py OFFICIAL_PATH

OFFICIAL_PATH is a checkout of the paper's public code (the directory holding train.py). The
checks, both training runs and the probes are in tests/_parity_training.py; the test
tests/test_parity_training.py compares spherelab with this file (and with the official code
itself when it is there).
"""

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from _official import load_official  # noqa: E402
from _parity_training import (  # noqa: E402
    CHECKS,
    initial_model,
    max_abs_diff,
    official_model,
    official_run,
    probes,
    spherelab_run,
)

OUT = ROOT / "tests" / "fixtures" / "parity" / "training.json"


def main(official_path: str) -> None:
    torch.set_num_threads(1)
    modules = load_official(official_path)
    official_net, ours = official_model(modules), initial_model()
    same = all(
        torch.equal(a, b)
        for a, b in zip(official_net.state_dict().values(), ours.state_dict().values())
    )
    if not same:
        raise SystemExit("the stand-in network does not hold the official initial weights")
    fixture = {"about": __doc__.splitlines()[0], "checks": {}}
    for check in CHECKS:
        theirs = official_run(check, official_net, modules)
        mine = spherelab_run(check, ours)
        diff = max_abs_diff(theirs, mine)
        moved = float((theirs[-1] - theirs[0]).abs().max())
        fixture["checks"][check.name] = {
            "official_flags": check.official,
            "spherelab_optim": {
                k: list(v) if isinstance(v, tuple) else v for k, v in check.optim.items()
            },
            "spherelab_loss": check.loss,
            "ghost_batch": check.ghost,
            "max_abs_diff_measured": diff,
            "max_abs_displacement": moved,
            "probes": probes(theirs),
        }
        print(f"{check.name:40s} max |official - spherelab| = {diff:.1e} (moved {moved:.2f})")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(fixture, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: parity_training.py OFFICIAL_PATH (the paper's code checkout)")
    main(sys.argv[1])
