"""Regression tests for what a user can feed spherelab (issue 16): every classifier label is
accepted everywhere, relabelling validates before it writes, configs and data are checked up
front, and the determinism switch keeps its promise."""

import json
import shutil

import pytest

from spherelab.cli import main
from spherelab.regimes import (
    LABELS,
    NO_REGIME,
    REGIMES,
    UNCLASSIFIED,
    distinct_records,
    estimate_boundaries,
    majority_regime,
)

SMALL = ["--set", "data.train_subset=256", "--set", "model.width=16"]


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """A finished two-ELR sweep of short classified runs (built once, copied per test)."""
    out = tmp_path_factory.mktemp("sweep") / "s"
    argv = ["sweep", "--elrs", "1e-3,1e-1", "--set", "train.steps=20", *SMALL, "--out", str(out)]
    assert main([*argv, "--no-report"]) == 0
    return out


def _copy(sweep_dir, tmp_path):
    return shutil.copytree(sweep_dir, tmp_path / "s")


# -- item 1: every label the classifier can give is accepted everywhere ---------------------


def test_every_label_is_defined_once_and_no_regime_labels_do_not_vote():
    assert set(LABELS) == set(REGIMES) | set(NO_REGIME) and UNCLASSIFIED in NO_REGIME
    assert majority_regime(["convergence", UNCLASSIFIED, UNCLASSIFIED]) == "convergence"
    assert majority_regime([UNCLASSIFIED]) == UNCLASSIFIED
    with pytest.raises(ValueError, match="unknown regime labels"):
        majority_regime(["convergance"])


def test_an_elr_whose_runs_name_no_regime_makes_no_boundary():
    bounds = estimate_boundaries([1e-3, 1e-2, 1e-1], ["convergence", UNCLASSIFIED, "divergence"])
    assert [(b.lo, b.hi, b.below, b.above) for b in bounds] == [
        (1e-3, 1e-1, "convergence", "divergence")
    ]


def test_a_sweep_of_unclassified_runs_writes_its_report_and_says_they_do_not_vote(tmp_path):
    out = tmp_path / "s"
    argv = ["sweep", "--elrs", "1e-3,1e-2", "--set", "train.steps=1", *SMALL, "--out", str(out)]
    assert main(argv) == 0
    assert json.loads((out / "boundaries.json").read_text()) == []
    page = (out / "report.html").read_text()
    assert "unclassified (2)" in page and "do not vote" in page
    assert main(["report", str(out)]) == 0


# -- item 2: report --relabel validates before it writes -------------------------------------


def _duplicate_records(run_dir, change=False):
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines()
    again = [json.dumps({**json.loads(x), "train_loss": 9.0}) for x in lines] if change else lines
    path.write_text("\n".join(lines + again) + "\n")


def test_relabel_drops_records_a_second_writer_repeated(sweep_dir, tmp_path):
    out = _copy(sweep_dir, tmp_path)
    before = (out / "summary.csv").read_text()
    for run in (out / "runs").iterdir():
        _duplicate_records(run)
    assert main(["report", "--relabel", str(out)]) == 0
    assert (out / "summary.csv").read_text() == before
    assert UNCLASSIFIED not in before


def test_relabel_refuses_conflicting_records_and_leaves_every_file_intact(
    sweep_dir, tmp_path, capsys
):
    out = _copy(sweep_dir, tmp_path)
    runs = sorted((out / "runs").iterdir())
    _duplicate_records(runs[-1], change=True)
    files = [out / "summary.csv", *(r / "summary.json" for r in runs)]
    before = [f.read_bytes() for f in files]
    assert main(["report", "--relabel", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "metrics.jsonl" in err and "fresh --out" in err
    assert [f.read_bytes() for f in files] == before


def test_distinct_records_keeps_order_and_drops_exact_repeats():
    rows = [{"step": 0, "x": 1}, {"step": 1, "x": 2}, {"step": 0, "x": 1}]
    assert distinct_records(rows) == rows[:2]
