"""Where a fine-tune branch came from: the init record of the scratch run whose checkpoint it
started from (through any chain of branches), the reference its regime label is judged against.

A branch's own first record is its starting checkpoint, not a random direction: measured from
there, a branch that leaves a converged start for regime 2 would look diverged (its loss and
gradient norm rise far above their start). `train.init_from` names the starting checkpoint;
its run directory (the checkpoint's `checkpoints/` parent) holds the origin's records.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from spherelab.io import read_json_dict, read_jsonl
from spherelab.train.checkpoints import CKPT_DIR

log = logging.getLogger("spherelab")
# A chain of branches longer than this is taken for a loop of copied directories.
MAX_CHAIN = 64


def origin_init(init_from: str | Path | None) -> dict[str, Any] | None:
    """The step-0 record of the scratch run at the root of `init_from`'s chain of branches.

    None when the run is no branch (`init_from` unset); {} when the origin cannot be found (a
    checkpoint outside a run directory, a moved or deleted run): the label's votes that need
    the init references then abstain.
    """
    if not init_from:
        return None
    checkpoint = Path(init_from)
    for _ in range(MAX_CHAIN):
        run = checkpoint.parent.parent if checkpoint.parent.name == CKPT_DIR else checkpoint.parent
        try:
            cfg = read_json_dict(run / "config.json")
            rows = read_jsonl(run / "metrics.jsonl") if cfg is not None else []
        except (OSError, ValueError):
            rows = []
        if not rows or cfg is None:
            break
        parent = cfg.get("train", {}).get("init_from")
        if not parent:
            first = min(rows, key=lambda r: r.get("step", 0))
            return dict(first) if first.get("step") == 0 else {}
        checkpoint = Path(parent)
    log.warning(
        "the scratch run behind train.init_from=%s was not found; its branch's label uses "
        "only the votes that need no init reference",
        init_from,
    )
    return {}
