"""The README's result tables and boundaries say what the committed outputs in results/ hold."""

import json
import math
import re
from pathlib import Path

import pytest

from spherelab.io import read_csv

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
REGIME_NUMBER = {
    "convergence": "1",
    "chaotic_equilibrium": "2",
    "divergence": "3",
    "undetermined": "?",
}
COLUMN_OF_ROW = {
    "final train loss": "train_loss",
    "train loss": "train_loss",
    "test acc": "test_acc",
    "eff. grad norm": "eff_grad_norm",
}
RESULTS = {"**MNIST-1D, `make demo`**": "demo", "**Fashion-MNIST regime map**": "fashion_mnist"}


def _section(title: str) -> str:
    start = README.index(title)
    end = README.find("\n**", start + len(title))
    return README[start : end if end > 0 else None]


def _table(section: str) -> dict[str, list[str]]:
    lines = [line for line in section.splitlines() if line.startswith("|")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return {row[0]: row[1:] for row in rows if not set(row[0]) <= {"-"}}


def _shown(value: float, printed: str) -> bool:
    """`value` rounds to `printed` at the significant digits printed."""
    mantissa = printed.lower().split("e")[0].lstrip("0.").replace(".", "") or "0"
    digits = max(len(mantissa.lstrip("0")), 1)
    return math.isclose(float(f"{value:.{digits}g}"), float(printed), rel_tol=1e-9)


@pytest.mark.parametrize("title, folder", RESULTS.items())
def test_the_readme_table_matches_the_committed_summary(title, folder):
    table = _table(_section(title))
    rows = {float(r["elr"]): r for r in read_csv(ROOT / "results" / folder / "summary.csv")}
    elrs = [float(e) for e in table["ELR"]]
    assert len(elrs) == len(rows), f"{folder}: the table shows {len(elrs)} of {len(rows)} ELRs"
    for i, elr in enumerate(elrs):
        row = next(r for e, r in rows.items() if _shown(e, table["ELR"][i]))
        assert REGIME_NUMBER[row["regime"]] == table["regime"][i], (folder, elr)
        for label, column in COLUMN_OF_ROW.items():
            if label in table:
                assert _shown(float(row[column]), table[label][i]), (folder, label, elr)


@pytest.mark.parametrize("title, folder", RESULTS.items())
def test_the_readme_boundaries_match_the_committed_boundaries(title, folder):
    text = _section(title)
    said = re.findall(r"([12])\|([23]) in \[([0-9.e-]+), ([0-9.e-]+)\]", text)
    saved = json.loads((ROOT / "results" / folder / "boundaries.json").read_text())
    assert len(said) == len(saved)
    for (lo_regime, _hi_regime, lo, hi), boundary in zip(said, saved):
        assert REGIME_NUMBER[boundary["below"]] == lo_regime
        assert _shown(boundary["lo"], lo) and _shown(boundary["hi"], hi)
