"""The committed truncation table (results/classifier_truth/): no truncated MNIST-1D run of the
ground-truth map is labelled wrongly (a label equals the full-length one or is undetermined)."""

import csv
import json
from pathlib import Path

from spherelab.regimes import LABELS, REGIMES, UNDETERMINED

TABLE = Path(__file__).parent.parent / "results" / "classifier_truth"
CUTS = (30, 60, 100, 200)


def test_no_truncated_run_of_the_ground_truth_map_is_labelled_wrongly():
    rows = list(csv.DictReader((TABLE / "truth.csv").read_text(encoding="utf-8").splitlines()))
    assert len(rows) >= 36 and len({r["elr"] for r in rows}) >= 12  # >= 12 ELRs x 3 seeds
    judged = [r for r in rows if r["truth"] in REGIMES]
    assert {r["truth"] for r in judged} == set(REGIMES)  # the map shows all three regimes
    for row in rows:
        for cut in CUTS:
            label = row[f"label_{cut}"]
            assert label in LABELS and row[f"reason_{cut}"], (row["elr"], row["seed"], cut)
            if row["truth"] in REGIMES:
                assert label in (row["truth"], UNDETERMINED), (row["elr"], row["seed"], cut)
    summary = json.loads((TABLE / "truth.json").read_text(encoding="utf-8"))
    assert all(c["wrong"] == 0 for c in summary["truncations"].values())
