"""docs/chaos.md says what the committed outputs in results/chaos/ hold: every table row and
bracket it quotes is formatted here from those files and must appear in the page."""

import json
import math
from pathlib import Path

import pytest

from spherelab.io import read_csv

ROOT = Path(__file__).resolve().parents[1]
# whitespace collapsed: a quoted phrase may wrap across lines
DOC = " ".join((ROOT / "docs" / "chaos.md").read_text(encoding="utf-8").split())
RESULTS = ROOT / "results" / "chaos"
REGIME_NUMBER = {
    "convergence": "1",
    "chaotic_equilibrium": "2",
    "divergence": "3",
    "undetermined": "?",
}
MAPS = ("demo", "fashion_mnist")


def toy_rows(toy: dict) -> list[str]:
    return [
        f"| {r['factor']:g} | {r['elr']:.4g} | {r['theory']:.4g} | "
        f"{r['measured']:.4g} ± {r['measured_err']:.1g} | {100 * r['relative_error']:.1f} % |"
        for r in toy["exponents"]
    ]


def toy_claims(toy: dict) -> list[str]:
    return [
        f"{toy['predicted_threshold']:.4g} ± {toy['predicted_threshold_err']:.2g}",
        f"measured zero crossing {toy['measured_crossing']:.4g}",
        f"{100 * toy['crossing_relative_error']:.1f} %",
        f"largest relative error {100 * toy['max_relative_error']:.1f} %",
    ]


def map_rows(folder: str) -> list[str]:
    rows = read_csv(RESULTS / folder / "summary.csv")
    out = []
    for r in sorted(rows, key=lambda r: float(r["elr"])):
        if not r["lyapunov"]:
            continue
        out.append(
            f"| {float(r['elr']):.3g} | {REGIME_NUMBER[r['regime_loss']]} | "
            f"{REGIME_NUMBER[r['regime']]} | "
            f"{float(r['lyapunov']):.3g} ± {float(r['lyapunov_err']):.2g} | "
            f"{math.degrees(float(r['step_angle_mean'])):.3g} |"
        )
    return out


def bracket(b: dict | None) -> str:
    return "none" if b is None else f"[{b['lo']:.3g}, {b['hi']:.3g}]"


def map_claims(folder: str) -> list[str]:
    res = json.loads((RESULTS / folder / "boundaries.json").read_text(encoding="utf-8"))
    loss = {(b["below"], b["above"]): b for b in res["loss_boundaries"]}
    out = [f"λ 1|2 {bracket(res['lyapunov_boundary'])}"]
    out.append(f"step angle 2|3 {bracket(res['step_angle_boundary'])}")
    for (below, above), b in loss.items():
        out.append(f"loss {REGIME_NUMBER[below]}|{REGIME_NUMBER[above]} {bracket(b)}")
    return out


def test_the_toy_numbers_in_the_docs_are_the_committed_ones():
    toy = json.loads((RESULTS / "toy.json").read_text(encoding="utf-8"))
    for line in toy_rows(toy) + toy_claims(toy):
        assert line in DOC, line


def test_the_toy_agreement_meets_its_target():
    toy = json.loads((RESULTS / "toy.json").read_text(encoding="utf-8"))
    assert toy["max_relative_error"] < 0.05
    assert toy["crossing_relative_error"] < 0.05


@pytest.mark.parametrize("folder", MAPS)
def test_the_map_tables_and_brackets_in_the_docs_are_the_committed_ones(folder):
    for line in map_rows(folder) + map_claims(folder):
        assert line in DOC, (folder, line)
