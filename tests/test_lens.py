"""The regime lens on a synthetic fixed-ELR sweep and a synthetic conventional run."""

import csv
import json
import math

import pytest

from spherelab.regimes import classify_stretch
from spherelab.studies.lens import band_of, lens, regime_bands, write_lens

MAP = {1e-4: "convergence", 1e-3: "convergence", 1e-2: "chaotic_equilibrium", 1e-1: "divergence"}


def _sweep(root, labels=MAP):
    root.mkdir(parents=True)
    rows = [
        {
            "elr": e,
            "seed": 0,
            "regime": r,
            "status": "finished",
            "train_loss": 0.1,
            "test_acc": 0.5,
            "eff_grad_norm": 1.0,
            "run_dir": "",
        }
        for e, r in labels.items()
    ]
    with (root / "summary.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def _run(root, elrs, losses, momentum=0.5):
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"optim": {"momentum": momentum}}))
    (root / "summary.json").write_text(json.dumps({"num_classes": 10}))
    rows = [
        {"epoch": float(i), "step": 10 * i, "elr": e, "train_loss": loss, "train_acc": 0.8}
        for i, (e, loss) in enumerate(zip(elrs, losses))
    ]
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _two_phase(tmp_path, second_phase_flat=True):
    """Records 0-5 at effective ELR 4e-4 (band 1), records 6-10 at 2e-2 (band 2)."""
    elrs = [2e-4] * 6 + [1e-2] * 5  # recorded lr/||w||^2; momentum 0.5 doubles it
    falling = [2.3] + [e**-1.5 for e in range(1, 6)]
    level = falling[-1]
    tail = (
        [level * (1 - 0.1 * (-1) ** i) for i in range(5)]  # (a rise at the seam: undetermined)
        if second_phase_flat
        else [level * (e / 5) ** -2 for e in range(6, 11)]
    )
    return _run(tmp_path / "run", elrs, falling + tail)


def test_bands_split_at_the_geometric_midpoint_of_differing_neighbours():
    bands = regime_bands(list(MAP.items()))
    assert [b[2] for b in bands] == ["convergence", "chaotic_equilibrium", "divergence"]
    assert bands[0][1] == pytest.approx(math.sqrt(1e-3 * 1e-2))
    assert bands[1][1] == pytest.approx(math.sqrt(1e-2 * 1e-1))
    assert band_of(3e-3, bands) == "convergence" and band_of(4e-3, bands) == "chaotic_equilibrium"
    assert band_of(1e-9, bands) == "convergence" and band_of(10.0, bands) == "divergence"


def test_bands_need_a_classified_run():
    with pytest.raises(ValueError, match="classified"):
        regime_bands([])


def test_a_stretch_is_judged_by_the_rules_that_label_a_whole_run():
    epochs = [4.0, 6.0, 8.0, 10.0]

    def judge(loss):
        return classify_stretch(epochs, loss, init_loss=12.0, num_classes=10).regime

    assert judge([1.0, 0.4, 0.2, 0.1]) == "convergence"
    assert judge([0.5, 0.55, 0.48, 0.52]) == "chaotic_equilibrium"
    assert judge([11.0, 12.5, 11.5, 12.0]) == "divergence"  # at the init level
    # above chance but below a quarter of the init level: learned, so not diverged
    assert judge([2.4, 2.5, 2.3, 2.4]) == "chaotic_equilibrium"


def test_each_stretch_gets_its_band_and_agrees_with_the_runs_behaviour(tmp_path):
    result = lens(_two_phase(tmp_path), _sweep(tmp_path / "sweep"))
    assert [s.predicted for s in result.stretches] == ["convergence", "chaotic_equilibrium"]
    assert [s.observed for s in result.stretches] == ["convergence", "chaotic_equilibrium"]
    assert result.stretches[0].start_epoch == 1.0  # the init transient is not judged
    assert result.elr_effective[0] == pytest.approx(4e-4)  # momentum 0.5 doubles the ELR
    assert result.agreement == 1.0


def test_a_run_still_converging_in_a_chaotic_band_lowers_the_agreement(tmp_path):
    result = lens(_two_phase(tmp_path, second_phase_flat=False), _sweep(tmp_path / "sweep"))
    assert result.stretches[1].observed == "convergence"
    assert result.stretches[1].agree is False
    judged = sum(s.intervals for s in result.stretches)
    assert result.agreement == pytest.approx(result.stretches[0].intervals / judged)


def test_write_lens_and_the_cli_write_the_figure_json_and_page(tmp_path):
    from spherelab.cli import main

    run, sweep = _two_phase(tmp_path), _sweep(tmp_path / "sweep")
    assert main(["report", str(sweep), "--lens", str(run)]) == 0
    for name in ("lens.html", "lens.png", "lens.svg", "lens.json"):
        assert (run / "lens" / name).is_file()
    saved = json.loads((run / "lens" / "lens.json").read_text())
    assert saved["agreement"] == 1.0 and saved["stretches"][0]["agree"] is True
    assert write_lens(run, sweep, tmp_path / "elsewhere").name == "lens.html"


def test_a_directory_without_records_is_refused_with_the_fix(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a run directory"):
        lens(tmp_path / "empty", _sweep(tmp_path / "sweep"))


def test_records_inside_the_first_epoch_are_the_init_transient_and_not_labelled(tmp_path):
    elrs = [2e-4] * 7 + [1e-2] * 5
    losses = [2.3, 1.5] + [e**-1.5 for e in range(1, 6)] + [0.09, 0.1, 0.09, 0.1, 0.09]
    run = _run(tmp_path / "run", elrs, losses)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for i, row in enumerate(rows):  # epochs 0, 0.5, 1, 2, ...
        row["epoch"] = 0.0 if i == 0 else (0.5 if i == 1 else float(i - 1))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = lens(run, _sweep(tmp_path / "sweep"))
    assert result.stretches[0].start_epoch == 1.0
    assert sum(s.intervals for s in result.stretches) == len(rows) - 3
