"""Regime lens: a conventional run's effective-ELR trajectory over a fixed-ELR sweep's regime map.

The sweep's majority label per ELR cuts the ELR axis into bands at the geometric midpoints
between neighbouring sampled ELRs (the same bands the regime map shades; a band edge between
two different labels is a boundary's midpoint). The run's ELR is compared as an *effective*
step: ELR / (1 - momentum) for the run and for the sweep alike (heavy-ball momentum mu scales
a steady step by 1 / (1 - mu); the paper's sphere sweeps have mu = 0).

Each interval between consecutive records gets the band of the geometric mean of the ELRs at
its ends; consecutive intervals with one band form a stretch. Intervals that start before epoch
TRANSIENT_EPOCHS (the init transient, where every run drops from the init loss) are left
out. A stretch of >= MIN_INTERVALS intervals is then judged by the run's own behaviour over it,
by the rules that label a whole run (``spherelab.regimes.classify_stretch``: the stretch is the
window, the run's first loss the init loss). ``agreement`` is the fraction of judged intervals
whose stretch's observed behaviour equals its band's label.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from spherelab.io import read_json_dict, read_jsonl, write_json
from spherelab.regimes import REGIMES, classify_stretch, sweep_labels
from spherelab.report.data import load_sweep
from spherelab.report.html import Page
from spherelab.report.style import new_figure, regime_color, regime_number, save_figure

MIN_INTERVALS = 2  # a stretch needs >= 2 intervals (3 records) to show a trend
TRANSIENT_EPOCHS = 1.0  # intervals starting earlier are the init transient: not labelled


@dataclass(frozen=True)
class Stretch:
    start_epoch: float
    end_epoch: float
    predicted: str  # the band (sweep regime) its effective ELR falls in
    observed: str  # the run's behaviour over it; "" if too short to judge, or a NO_REGIME label
    intervals: int
    elr_min: float
    elr_max: float
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def agree(self) -> bool | None:
        # a stretch too short to judge, or whose behaviour shows no regime, is not judged
        return self.observed == self.predicted if self.observed in REGIMES else None


@dataclass(frozen=True)
class LensResult:
    run_dir: str
    sweep_dir: str
    momentum: float
    bands: list[tuple[float, float, str]]  # (lo, hi, regime) of effective ELR
    epochs: list[float]
    elr_effective: list[float]
    train_loss: list[float]
    stretches: list[Stretch]
    agreement: float  # NaN when no stretch could be judged

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for s, d in zip(self.stretches, out["stretches"]):
            d["agree"] = s.agree
        return out


def regime_bands(labels: Sequence[tuple[float, str]]) -> list[tuple[float, float, str]]:
    """Bands (lo, hi, regime) from (ELR, label) pairs, split at geometric midpoints."""
    pairs = sorted(labels)
    if not pairs:
        raise ValueError(
            "the sweep has no classified run; the lens needs at least one "
            "finished run with a regime label in its summary.csv"
        )
    bands, lo = [], 0.0
    for (e1, r1), (e2, r2) in itertools.pairwise(pairs):
        if r1 != r2:
            mid = math.sqrt(e1 * e2)
            bands.append((lo, mid, r1))
            lo = mid
    bands.append((lo, math.inf, pairs[-1][1]))
    return bands


def band_of(elr: float, bands: Sequence[tuple[float, float, str]]) -> str:
    for lo, hi, regime in bands:
        if lo <= elr < hi:
            return regime
    return bands[-1][2] if elr >= bands[-1][0] else bands[0][2]


def _read_records(run_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    for name in ("config.json", "metrics.jsonl"):
        if not (run_dir / name).is_file():
            raise ValueError(
                f"{run_dir} is not a run directory ({run_dir / name} is missing); pass "
                "the directory `spherelab train` wrote"
            )
    cfg = read_json_dict(run_dir / "config.json")
    if cfg is None:
        raise ValueError(f"{run_dir / 'config.json'} is unreadable; pass an intact run directory")
    records = sorted(read_jsonl(run_dir / "metrics.jsonl"), key=lambda r: r["step"])
    if len(records) < 3:
        raise ValueError(
            f"{run_dir} has {len(records)} records; the lens needs >= 3 (set train.records higher)"
        )
    return records, cfg


def _sweep_labels(sweep_dir: Path) -> tuple[list[tuple[float, str]], float]:
    sweep = load_sweep(sweep_dir)
    labels = sweep_labels(sweep.rows)
    moms = {float(c.get("optim", {}).get("momentum", 0.0)) for c in sweep.configs} or {0.0}
    if len(moms) > 1:
        raise ValueError(f"{sweep_dir} mixes momenta {sorted(moms)}; pass a sweep with one")
    mom = moms.pop()
    return [(e / (1 - mom), r) for e, r in labels.items()], mom


def sweep_bands(sweep_dir: str | Path) -> tuple[list[tuple[float, float, str]], float]:
    """The regime bands (lo, hi, regime) of a sweep, in effective ELR, and its momentum."""
    labels, momentum = _sweep_labels(Path(sweep_dir))
    return regime_bands(labels), momentum


def lens(conv_run_dir: str | Path, sweep_dir: str | Path) -> LensResult:
    """Label each stretch of a conventional run by the sweep's regime bands; judge each."""
    run_dir = Path(conv_run_dir)
    records, cfg = _read_records(run_dir)
    momentum = float(cfg.get("optim", {}).get("momentum", 0.0))
    bands = sweep_bands(sweep_dir)[0]
    epochs = [float(r["epoch"]) for r in records]
    elr = [float(r["elr"]) / (1 - momentum) for r in records]
    loss = [float(r["train_loss"]) for r in records]
    acc = [float(r.get("train_acc", math.nan)) for r in records]
    accuracies = acc if all(math.isfinite(a) for a in acc) else None  # votes only if complete
    skip = next((i for i, e in enumerate(epochs) if e >= TRANSIENT_EPOCHS), len(epochs))
    # label j: the interval from record skip + j to record skip + j + 1
    labels = [band_of(math.sqrt(elr[i] * elr[i + 1]), bands) for i in range(skip, len(elr) - 1)]
    num_classes = _num_classes(run_dir)
    stretches, start = [], 0
    for k in range(1, len(labels) + 1):
        if k == len(labels) or labels[k] != labels[start]:
            first, last = skip + start, skip + k  # the records of intervals start..k-1
            part = slice(first, last + 1)
            observed, stats = "", {}
            if k - start >= MIN_INTERVALS:
                verdict = classify_stretch(
                    epochs[part],
                    loss[part],
                    init_loss=loss[0],
                    train_acc=accuracies[part] if accuracies is not None else None,
                    num_classes=num_classes,
                )
                observed, stats = verdict.regime, verdict.stats
            stretches.append(
                Stretch(
                    epochs[first],
                    epochs[last],
                    labels[start],
                    observed,
                    k - start,
                    min(elr[part]),
                    max(elr[part]),
                    stats,
                )
            )
            start = k
    judged = [s for s in stretches if s.agree is not None]
    agreement = (
        sum(s.intervals for s in judged if s.agree) / sum(s.intervals for s in judged)
        if judged
        else math.nan
    )
    return LensResult(
        str(run_dir), str(sweep_dir), momentum, bands, epochs, elr, loss, stretches, agreement
    )


def _num_classes(run_dir: Path) -> int | None:
    summary = read_json_dict(run_dir / "summary.json") or {}
    value = summary.get("num_classes")
    return int(value) if value else None


def lens_figure(result: LensResult) -> Figure:
    """Top: effective ELR over the sweep's regime bands. Bottom: train loss, stretches shaded
    by their band (hatched where the run's own behaviour disagrees)."""
    fig = new_figure(7.5, 6)
    top, bottom = fig.subplots(2, 1, sharex=True)
    finite = [e for e in result.elr_effective if e > 0 and math.isfinite(e)]
    lo, hi = min(finite) / 3, max(finite) * 3
    for b_lo, b_hi, regime in result.bands:
        top.axhspan(
            max(b_lo, lo),
            min(b_hi, hi),
            color=regime_color(regime),
            alpha=0.25,
            lw=0,
            label=f"sweep: {regime}",
        )
    top.plot(result.epochs, result.elr_effective, "k.-", label="run: ELR / (1 - momentum)")
    top.set_yscale("log")
    top.set_ylim(lo, hi)
    top.set_ylabel("effective ELR")
    top.legend(fontsize=7, loc="best")
    for s in result.stretches:
        bottom.axvspan(
            s.start_epoch,
            s.end_epoch,
            color=regime_color(s.predicted),
            alpha=0.25,
            lw=0,
            hatch="//" if s.agree is False else None,
        )
        if s.observed:
            bottom.text(
                (s.start_epoch + s.end_epoch) / 2,
                1.01,
                f"band {regime_number(s.predicted)}, run {regime_number(s.observed)}",
                transform=bottom.get_xaxis_transform(),
                ha="center",
                fontsize=7,
            )
    bottom.plot(result.epochs, result.train_loss, "k.-")
    bottom.set_yscale("log")
    bottom.set_ylabel("train loss")
    bottom.set_xlabel("epoch")
    top.set_title(
        f"regime lens: agreement {result.agreement:.2f} (hatched = disagree)", fontsize=10
    )
    return fig


def write_lens(
    conv_run_dir: str | Path, sweep_dir: str | Path, out_dir: str | Path | None = None
) -> Path:
    """lens.json, lens.png/.svg and lens.html into out_dir (default CONV_RUN/lens/)."""
    result = lens(conv_run_dir, sweep_dir)
    out = Path(out_dir) if out_dir is not None else Path(conv_run_dir) / "lens"
    write_json(out / "lens.json", result.to_dict())
    png = save_figure(lens_figure(result), out / "lens")[0]
    page = Page(f"Regime lens of {conv_run_dir}")
    page.paragraph(
        f"Map: fixed-ELR sweep {sweep_dir}. Agreement between the band label and "
        f"the run's own behaviour: {result.agreement:.2f}."
    )
    page.figure(png, "effective ELR over the regime map; train loss by stretch")
    page.table(
        ["from epoch", "to epoch", "band (sweep)", "observed (run)", "intervals"],
        [
            [s.start_epoch, s.end_epoch, s.predicted, s.observed or "-", s.intervals]
            for s in result.stretches
        ],
        row_class=[s.predicted for s in result.stretches],
    )
    return page.write(out / "lens.html")
