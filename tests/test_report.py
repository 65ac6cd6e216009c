"""Tests for spherelab.report (data, figures, page) on a synthetic three-regime sweep directory."""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
import math
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from spherelab.regimes import estimate_boundaries, sweep_boundaries
from spherelab.report import figures as plots
from spherelab.report import write as report
from spherelab.report.data import RunData
from spherelab.report.style import REGIME_COLORS

SRC = Path(__file__).resolve().parents[1] / "src"
CHROMIUM = Path("/usr/bin/chromium")
EPOCHS = [0, 1, 2, 4, 8, 16, 32]
COLUMNS = [
    "elr",
    "seed",
    "regime",
    "status",
    "train_loss",
    "train_acc",
    "test_loss",
    "test_acc",
    "eff_grad_norm",
    "si_norm",
    "epochs",
    "run_dir",
    "error",
]
# (elr, regime, status): three regimes, one non-finite divergent run, one failed run.
POINTS = [
    (1e-5, "convergence", "finished"),
    (1e-4, "convergence", "finished"),
    (1e-3, "chaotic_equilibrium", "finished"),
    (5e-3, "chaotic_equilibrium", "finished"),
    (5e-2, "divergence", "finished"),
    (1e-1, "divergence", "nonfinite"),
    (2e-2, "", "failed"),
]
FAILED_ERROR = "RuntimeError: CUDA out of memory (synthetic failure for the report test)"


def _record(elr: float, regime: str, epoch: int, rng: np.random.Generator) -> dict:
    """A plausible metrics record for the given regime (shapes as in docs/science.md#the-three-regimes)."""
    t = epoch + 1.0
    if regime == "convergence":
        loss = 9.5 * t ** (-1.0 - 300 * elr)
    elif regime == "chaotic_equilibrium":
        loss = 9.5 if epoch == 0 else 300 * elr * (1 + 0.2 * rng.standard_normal() ** 2)
    else:
        loss = 9.5 if epoch == 0 else 10 + rng.random()
    grad = 600.0 if epoch == 0 else (60 * loss if regime != "divergence" else 2e4)
    acc = 0.1 if epoch == 0 else float(np.clip(0.9 - 0.05 * loss, 0.1, 1.0))
    return {
        "epoch": epoch,
        "step": 100 * epoch,
        "train_loss": loss,
        "train_acc": acc,
        "test_loss": loss * 1.2,
        "test_acc": acc * 0.95,
        "eff_grad_norm": grad,
        "si_norm": 12.65,
        "angle": min(1.5, elr * grad),
    }


def _write_run(run_dir: Path, elr: float, regime: str, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    run_dir.mkdir(parents=True)
    records = [_record(elr, regime, e, rng) for e in EPOCHS]
    config = {
        "model": {"name": "convnet", "width": 4},
        "data": {"name": "synthetic"},
        "optim": {"elr": elr},
        "train": {"epochs": EPOCHS[-1], "seed": seed},
        "environment": {"python": "3.11.2", "torch": "2.13.0", "device": "cpu"},
    }
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if regime != "divergence":  # diagnostics for some runs only
        diag = [
            {"epoch": e, "sharpness_eff": 1.5 / elr * (1 + 0.1 * rng.random()), "elr": elr}
            for e in EPOCHS[1:]
        ]
        (run_dir / "diagnostics.jsonl").write_text("".join(json.dumps(d) + "\n" for d in diag))
    return records[-1]


def _row(index: int, point: tuple[float, str, str], sweep: Path) -> dict:
    elr, regime, status = point
    run_dir = f"runs/run_{index:03d}"
    row = dict.fromkeys(COLUMNS, "")
    row.update(elr=elr, seed=0, regime=regime, status=status, epochs=EPOCHS[-1], run_dir=run_dir)
    if status == "failed":
        (sweep / run_dir).mkdir(parents=True)  # the crash left an empty run directory
        row["error"] = FAILED_ERROR
        return row
    final = _write_run(sweep / run_dir, elr, regime, seed=index)
    row.update({k: final[k] for k in COLUMNS if k in final})
    if status == "nonfinite":
        row.update(train_loss=math.inf, eff_grad_norm=math.nan)
    return row


def _make_sweep(parent: Path) -> Path:
    """A sweep directory following the contract of docs/run_files.md#sweep-directory."""
    sweep = parent / "sweep"
    sweep.mkdir()
    rows = [_row(i, p, sweep) for i, p in enumerate(POINTS)]
    with (sweep / "summary.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    spec = {
        "model": "convnet",
        "dataset": "synthetic",
        "elrs": [p[0] for p in POINTS],
        "seeds": [0],
        "epochs": EPOCHS[-1],
        "overrides": ["model.width=4"],
    }
    (sweep / "sweep.json").write_text(json.dumps({"spec": spec, "refined": []}))
    return sweep


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    return _make_sweep(tmp_path)


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A synthetic sweep and its report page, written once (figures cost seconds here)."""
    sweep = _make_sweep(tmp_path_factory.mktemp("reported"))
    page = report.write_report(sweep, title="My sweep")
    return sweep, page.read_text()


def _embedded_pngs(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def test_report_embeds_every_figure_as_a_decodable_png(reported: tuple[Path, str]) -> None:
    sweep_dir, html = reported
    embedded = _embedded_pngs(html)
    on_disk = sorted((sweep_dir / "figures").glob("*.png"))
    assert {p.stem for p in on_disk} == {
        "figure1",
        "grad_vs_loss",
        "regime_map",
        "sharpness_vs_stability",
    }
    assert sorted(embedded) == sorted(p.read_bytes() for p in on_disk)
    for data in embedded:
        pixels = mpimg.imread(io.BytesIO(data), format="png")
        assert pixels.shape[0] > 200 and pixels.shape[1] > 200


def test_every_figure_is_also_written_as_svg(reported: tuple[Path, str]) -> None:
    sweep_dir, _ = reported
    for png in (sweep_dir / "figures").glob("*.png"):
        svg = png.with_suffix(".svg")
        assert svg.is_file() and "<svg" in svg.read_text()[:2000]


def test_table_has_one_row_per_run_coloured_by_regime(reported: tuple[Path, str]) -> None:
    _, html = reported
    classes = re.findall(r'<tr class="([^"]*)">', html)
    expected = sorted(regime or status for _, regime, status in POINTS)
    assert sorted(classes) == expected


def test_failed_run_appears_with_its_error_and_figures_still_render(
    reported: tuple[Path, str],
) -> None:
    sweep_dir, html = reported
    failed_row = re.search(r'<tr class="failed">(.*?)</tr>', html).group(1)
    assert "failed" in failed_row and "CUDA out of memory" in failed_row
    assert FAILED_ERROR in html
    assert len(_embedded_pngs(html)) == len(list((sweep_dir / "figures").glob("*.png")))


def test_boundaries_json_holds_the_estimated_boundaries(reported: tuple[Path, str]) -> None:
    sweep_dir, _ = reported
    written = json.loads((sweep_dir / "boundaries.json").read_text())
    classified = [p for p in POINTS if p[2] != "failed"]
    expected = estimate_boundaries([p[0] for p in classified], [p[1] for p in classified])
    assert written == [json.loads(json.dumps({**b.to_dict(), "axes": {}})) for b in expected]
    assert [(b["below"], b["above"]) for b in written] == [
        ("convergence", "chaotic_equilibrium"),
        ("chaotic_equilibrium", "divergence"),
    ]


def test_report_lists_spec_and_environment(reported: tuple[Path, str]) -> None:
    _, html = reported
    assert "<title>My sweep</title>" in html
    assert "&quot;overrides&quot;" in html and "model.width=4" in html
    for item in ("python", "torch", "numpy", "matplotlib"):
        assert f"<td>{item}</td>" in html
    assert "<td>device</td>" in html and "<td>cpu</td>" in html


def test_load_sweep_skips_garbled_and_missing_run_files_with_a_warning(
    sweep_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    garbled = sweep_dir / "runs/run_000/metrics.jsonl"
    garbled.write_text(garbled.read_text() + '{"epoch": 64, "train_lo')  # writer was killed
    (sweep_dir / "runs/run_001/metrics.jsonl").unlink()
    with caplog.at_level(logging.WARNING, logger="spherelab"):
        sweep = report.load_sweep(sweep_dir)
    assert len(sweep.rows) == len(POINTS)
    assert 1e-4 not in [run.elr for run in sweep.runs]
    assert len(next(r for r in sweep.runs if r.elr == 1e-5).records) == len(EPOCHS)
    text = caplog.text
    assert "run_000" in text and "not valid JSON" in text and "run_001" in text
    plots.figure1(sweep.runs).savefig(io.BytesIO(), dpi=40)  # the figures still render


def test_load_sweep_rejects_a_directory_without_summary(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="summary.csv"):
        report.load_sweep(tmp_path)


def _runs(sweep_dir: Path) -> list[RunData]:
    return report.load_sweep(sweep_dir).runs


def test_figure1_draws_every_run_in_each_panel_coloured_by_elr(sweep_dir: Path) -> None:
    runs = _runs(sweep_dir)
    fig = plots.figure1(runs)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 3
    assert [ax.get_yscale() for ax in panels] == ["log", "linear", "log"]
    assert all(len(ax.get_lines()) == len(runs) for ax in panels)
    assert len({tuple(line.get_color()) for line in panels[0].get_lines()}) == len(
        {run.elr for run in runs}
    )
    assert any(ax.get_ylabel() == "ELR" for ax in fig.axes if ax not in panels)
    assert panels[0].get_xlim()[0] <= 0  # epoch 0 (init) is shown


def test_regime_map_shades_each_regime_and_marks_failed_runs(sweep_dir: Path) -> None:
    sweep = report.load_sweep(sweep_dir)
    fig = plots.regime_map(sweep.rows, sweep_boundaries(sweep.rows))
    shaded = {p.get_facecolor()[:3] for p in fig.axes[0].patches}
    import matplotlib.colors as mcolors

    for colour in REGIME_COLORS.values():
        assert mcolors.to_rgb(colour) in shaded
    crosses = [line for line in fig.axes[0].get_lines() if line.get_marker() == "x"]
    assert sum(len(line.get_xdata()) for line in crosses) == sum(p[2] == "failed" for p in POINTS)


def test_sharpness_vs_stability_requires_diagnostics() -> None:
    run = RunData(elr=1e-3, seed=0, regime="convergence", records=[{"epoch": 0}])
    with pytest.raises(ValueError, match="diagnostics"):
        plots.sharpness_vs_stability([run])


_NO_TORCH = """
import sys, types, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, Block())
pkg = types.ModuleType("spherelab"); pkg.__path__ = [sys.argv[1] + "/spherelab"]
sys.modules["spherelab"] = pkg  # import the report without the package __init__
from spherelab.report import figures as plots, write as report, data
sweep = data.load_sweep(sys.argv[2])
plots.figure1(sweep.runs); plots.regime_map(sweep.rows, [])
print(sorted(m for m in sys.modules if m.split(".")[0] == "torch"))
"""


def test_plots_and_report_work_without_importing_torch(sweep_dir: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _NO_TORCH, str(SRC), str(sweep_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs headless Chromium at /usr/bin/chromium")
def test_report_renders_as_a_non_blank_page_in_chromium(
    reported: tuple[Path, str], tmp_path: Path
) -> None:
    page = reported[0] / "report.html"
    shot = tmp_path / "shot.png"
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,2000",
        page.resolve().as_uri(),
    ]
    subprocess.run(cmd, capture_output=True, timeout=90, check=False)
    assert shot.is_file(), "chromium wrote no screenshot"
    rgb = mpimg.imread(shot)[..., :3]
    non_white = (rgb < 0.95).any(axis=-1).mean()
    colours = len(np.unique((rgb * 255).astype(np.uint8).reshape(-1, 3), axis=0))
    assert non_white > 0.05 and colours > 50


def test_each_extra_axis_value_gets_its_own_figures_and_boundaries(
    sweep_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = sweep_dir / "summary.csv"
    with summary.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    widths = ["4", "8"]
    with summary.open("w", newline="") as handle:  # the same runs again at a second width
        writer = csv.DictWriter(handle, fieldnames=[*COLUMNS, "model.width"])
        writer.writeheader()
        writer.writerows({**row, "model.width": w} for w in widths for row in rows)
    saved: list[str] = []

    def fake_save(fig, stem: Path) -> list[Path]:  # drawing is what costs time here
        saved.append(Path(stem).name)
        Path(stem).parent.mkdir(parents=True, exist_ok=True)
        Path(f"{stem}.png").write_bytes(b"png")
        return [Path(f"{stem}.png"), Path(f"{stem}.svg")]

    monkeypatch.setattr(report, "save_figure", fake_save)
    html = report.write_report(sweep_dir).read_text()
    assert sorted(s for s in saved if s.startswith("regime_map")) == [
        f"regime_map_{i}" for i in range(len(widths))
    ]
    assert "<title>ELR sweep: convnet on synthetic</title>" in html
    written = json.loads((sweep_dir / "boundaries.json").read_text())
    assert sorted({b["axes"]["model.width"] for b in written}) == widths
    assert len(written) == 2 * len(widths)
    assert len(re.findall(r'<tr class="', html)) == len(widths) * len(POINTS)


def test_regime_map_of_a_single_elr_lays_out_without_warnings() -> None:
    row = {
        "elr": 1e-3,
        "regime": "convergence",
        "status": "finished",
        "train_loss": 0.1,
        "test_acc": 0.9,
        "eff_grad_norm": 1.0,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plots.regime_map([row], []).savefig(io.BytesIO(), dpi=40)


_SHADING = """
import json, sys
from pathlib import Path
from matplotlib.colors import to_hex
from spherelab.report import write
from spherelab.report.style import REGIME_COLORS
drawn = {}
def fake_save(fig, stem):  # keep the regime map the report drew; rendering is not the point
    drawn[Path(stem).name] = fig
    Path(f"{stem}.png").parent.mkdir(parents=True, exist_ok=True)
    Path(f"{stem}.png").write_bytes(b"png")
    return [Path(f"{stem}.png"), Path(f"{stem}.svg")]
write.save_figure = fake_save
write.write_report(sys.argv[1])
regime_of = {to_hex(c): r for r, c in REGIME_COLORS.items()}
spans = sorted(
    (p.get_x(), p.get_x() + p.get_width(), regime_of[to_hex(p.get_facecolor())])
    for p in drawn["regime_map"].axes[0].patches
    if to_hex(p.get_facecolor()) in regime_of
)
print(json.dumps({"spans": spans, "boundaries": json.loads(Path(sys.argv[1], "boundaries.json").read_text())}))
"""


def _split_sweep(parent: Path) -> Path:
    """Two seeds per ELR; at ELR 1e-3 one converges and one is chaotic (a 1:1 tie)."""
    labels = {
        1e-4: ("convergence", "convergence"),
        1e-3: ("convergence", "chaotic_equilibrium"),
        1e-2: ("chaotic_equilibrium", "chaotic_equilibrium"),
        1e-1: ("divergence", "divergence"),
    }
    sweep, rows = parent / "split", []
    for elr, pair in labels.items():
        for seed, regime in enumerate(pair):
            run_dir = f"runs/run_{len(rows):03d}"
            final = _write_run(sweep / run_dir, elr, regime, seed=len(rows))
            row = dict.fromkeys(COLUMNS, "")
            row.update({k: final[k] for k in COLUMNS if k in final})
            row.update(elr=elr, seed=seed, regime=regime, status="finished", run_dir=run_dir)
            rows.append(row)
    with (sweep / "summary.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return sweep


def test_a_tied_elr_is_shaded_as_boundaries_json_says_under_any_hash_seed(
    tmp_path: Path,
) -> None:
    sweep = _split_sweep(tmp_path)
    outputs = []
    # With the old set-order majority these two seeds shade the tie differently (CPython 3.11).
    for hash_seed in ("0", "1"):
        out = subprocess.run(
            [sys.executable, "-c", _SHADING, str(sweep)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
        )
        assert out.returncode == 0, out.stderr
        outputs.append(json.loads(out.stdout))
    assert outputs[0] == outputs[1]
    spans, boundaries = outputs[0]["spans"], outputs[0]["boundaries"]
    assert [r for _, _, r in spans] == [
        "convergence",  # 1e-4
        "convergence",  # 1e-3: the 1:1 tie goes to the lower-numbered regime
        "chaotic_equilibrium",
        "divergence",
    ]
    changes = [(a[1], a[2], b[2]) for a, b in zip(spans, spans[1:]) if a[2] != b[2]]
    assert [(c[1], c[2]) for c in changes] == [(b["below"], b["above"]) for b in boundaries]
    assert [c[0] for c in changes] == pytest.approx([b["mid"] for b in boundaries])
