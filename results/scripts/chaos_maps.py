"""results/chaos/<name>/: λ of a measured sweep against its loss-based regime map.

Reads SWEEP/summary.csv and each run's summary.json (where `spherelab diagnose SWEEP --what
lyapunov` wrote lyapunov, lyapunov_err, step_angle_mean and the options), and writes
summary.csv (the sweep's rows with the λ columns), boundaries.json (the loss-based brackets of
spherelab.regimes from the loss alone (column regime_loss; `regime` is the label with λ's
vote), the 1|2 bracket from λ and the 2|3 bracket from the step angle of
spherelab.chaos_boundary, and the grid steps between them) and lyapunov.png/svg.

    PYTHONPATH=src python results/scripts/chaos_maps.py SWEEP NAME
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from spherelab.chaos_boundary import lyapunov_boundary, per_elr, step_angle_boundary
from spherelab.io import read_csv, read_json_dict, read_jsonl, write_csv
from spherelab.regimes import Boundary, label_run, sweep_boundaries
from spherelab.report.figures import lyapunov_vs_elr
from spherelab.report.style import save_figure

KEYS = ("lyapunov", "lyapunov_err", "step_angle_mean")


def _grid_steps(a: Boundary | None, b: Boundary | None, elrs: list[float]) -> int | None:
    """How many grid ELRs lie between the two brackets' upper ends (0: the same bracket)."""
    if a is None or b is None:
        return None
    lo, hi = sorted((a.hi, b.hi))
    return sum(1 for e in elrs if lo < e <= hi)


def main(sweep: Path, name: str) -> None:
    rows = read_csv(sweep / "summary.csv")
    for row in rows:
        s = read_json_dict(sweep / row["run_dir"] / "summary.json") or {}
        row.update({k: "" if s.get(k) is None else str(s[k]) for k in KEYS})
        row["lyapunov_steps"] = str((s.get("lyapunov_options") or {}).get("steps", ""))
        row["lyapunov_dtype"] = str((s.get("lyapunov_options") or {}).get("dtype", ""))
        # the label from the loss alone (λ not voting), for the comparison of boundaries
        records = read_jsonl(sweep / row["run_dir"] / "metrics.jsonl")
        row["regime_loss"] = label_run(records, row["status"], s.get("num_classes"))[0]
    out = Path("results/chaos") / name
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "summary.csv", rows, list(rows[0]))
    loss = sweep_boundaries([r | {"regime": r["regime_loss"]} for r in rows])
    lam, jumps = lyapunov_boundary(rows), step_angle_boundary(rows)
    loss12 = next((b for b in loss if b.below == "convergence"), None)
    loss23 = next((b for b in loss if b.above == "divergence"), None)
    elrs = sorted({float(r["elr"]) for r in rows})
    result = {
        "loss_boundaries": [b.to_dict() for b in loss],
        "lyapunov_boundary": lam.to_dict() if lam else None,
        "step_angle_boundary": jumps.to_dict() if jumps else None,
        "lyapunov_vs_loss_1_2_grid_steps": _grid_steps(lam, loss12, elrs),
        "step_angle_vs_loss_2_3_grid_steps": _grid_steps(jumps, loss23, elrs),
        "per_elr": [
            {
                "elr": p.elr,
                "lyapunov": p.lyapunov,
                "err": p.err,
                "step_angle_deg": math.degrees(p.step_angle),
            }
            for p in per_elr(rows)
        ],
    }
    (out / "boundaries.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    save_figure(lyapunov_vs_elr(rows, loss), out / "lyapunov")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
