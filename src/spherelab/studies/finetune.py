"""Pre-train at ELR p, fine-tune at ELR f from the pre-training run's last checkpoint (§7).

`run_finetune` writes into ``out``:

* ``runs/pretrain/`` a sweep over the pre-train ELRs (one run per p and seed),
* ``runs/finetune/pre_<p>__ft_<f>__seed_<s>/`` one branch per (p, f, seed); each starts from the
  pre-training run's LAST checkpoint via ``train.init_from`` (weights and BN statistics; the
  optimizer starts afresh on the same sphere, since the radius is the checkpoint's norm),
* ``runs/scratch/`` a sweep over the fine-tune ELRs from scratch with the same total budget
  (pre + fine-tune epochs): the baseline is its best run labelled ``convergence`` (regime 1),
* ``summary.csv`` (one row per branch), ``finetune.json`` (best pre-train ELR, its regime by the
  pre-training run's own classification, the baseline, the gain), figures and ``report.html``.

Accuracies are the final records' test accuracy (fractions); seeds are averaged. The figures and
report.html are drawn by ``spherelab.studies.finetune_report``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spherelab.config import apply_overrides
from spherelab.diagnose import hooks_for
from spherelab.io import read_json_dict, write_csv, write_json
from spherelab.regimes import REGIMES, majority_regime
from spherelab.studies.finetune_report import write_finetune_report
from spherelab.sweep.run import run_sweep
from spherelab.sweep.spec import SweepSpec, expand
from spherelab.train import checkpoints as ckpt
from spherelab.train import train_run

log = logging.getLogger("spherelab")
COLUMNS = (
    "pretrain_elr",
    "finetune_elr",
    "seed",
    "pretrain_regime",
    "pretrain_test_acc",
    "finetune_regime",
    "finetune_test_acc",
    "finetune_train_loss",
    "run_dir",
)


def _spec(
    model: str,
    dataset: str,
    elrs: Sequence[float],
    epochs: int,
    overrides: Mapping[str, Any],
    seeds: Sequence[int],
    name: str,
) -> SweepSpec:
    return SweepSpec(
        elrs=tuple(elrs),
        model=model,
        dataset=dataset,
        seeds=tuple(seeds),
        epochs=epochs,
        overrides=dict(overrides),
        name=name,
    )


def _check(pre_epochs: int, ft_epochs: int, overrides: Mapping[str, Any]) -> dict[str, Any]:
    for name, value in (("pre_epochs", pre_epochs), ("ft_epochs", ft_epochs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be an integer >= 1")
    if overrides.get("optim.mode", "sphere") != "sphere":
        raise ValueError(
            f"optim.mode={overrides['optim.mode']!r}: fine-tuning runs at fixed "
            "ELRs on the sphere; drop the optim.mode override"
        )
    if overrides.get("train.checkpoints") == "none":
        raise ValueError(
            "train.checkpoints='none' leaves no checkpoint to branch from; use "
            "'last' (the default here) or 'log'"
        )
    return {"train.checkpoints": "last", **overrides}


def run_finetune(
    model: str,
    dataset: str,
    pretrain_elrs: Sequence[float],
    finetune_elrs: Sequence[float],
    pre_epochs: int,
    ft_epochs: int,
    out: str | Path,
    overrides: Mapping[str, Any] | None = None,
    seeds: Sequence[int] = (0,),
) -> Path:
    """Run (or resume) the p x f grid and its scratch baseline; returns OUT/summary.csv."""
    sets = _check(pre_epochs, ft_epochs, dict(overrides or {}))
    root = Path(out).absolute()
    pre_spec = _spec(model, dataset, pretrain_elrs, pre_epochs, sets, seeds, "pretrain")
    scratch_spec = _spec(
        model, dataset, finetune_elrs, pre_epochs + ft_epochs, sets, seeds, "scratch"
    )
    run_sweep(pre_spec, root / "runs" / "pretrain", report=False, progress=False)
    rows = []
    for point in expand(pre_spec):
        pre_dir = root / "runs" / "pretrain" / point.run_dir
        pre = read_json_dict(pre_dir / "summary.json") or {}
        for f in scratch_spec.elrs:
            rows.append(_branch(point.config, pre_dir, pre, f, ft_epochs, root))
    run_sweep(scratch_spec, root / "runs" / "scratch", report=False, progress=False)
    scratch = _scratch_rows(scratch_spec, root / "runs" / "scratch")
    path = _write_csv(root / "summary.csv", rows)
    result = analyse(rows, scratch)
    settings = {
        "model": model,
        "dataset": dataset,
        "pre_epochs": pre_epochs,
        "ft_epochs": ft_epochs,
        "seeds": list(seeds),
        "overrides": dict(sets),
    }
    write_json(root / "finetune.json", result | settings)
    write_finetune_report(root, result)
    return path


def _branch(
    pre_cfg: Any, pre_dir: Path, pre: Mapping[str, Any], elr: float, ft_epochs: int, root: Path
) -> dict[str, Any]:
    """One fine-tune branch from the pre-training run's last checkpoint; its summary row."""
    last = ckpt.list_checkpoints(pre_dir)
    if not last:
        raise ValueError(
            f"{pre_dir} has no checkpoint to branch from; rerun its pre-training "
            "with train.checkpoints='last'"
        )
    cfg = apply_overrides(
        pre_cfg, {"optim.elr": elr, "train.epochs": ft_epochs, "train.init_from": str(last[-1])}
    )
    name = f"pre_{pre_cfg.optim.elr:.4g}__ft_{elr:.4g}__seed_{pre_cfg.train.seed}"
    run_dir = root / "runs" / "finetune" / name
    summary = train_run(cfg, run_dir, resume=True, hooks=hooks_for(cfg))
    log.info("fine-tune %s: test_acc %.4f", name, summary.get("test_acc", math.nan))
    return {
        "pretrain_elr": pre_cfg.optim.elr,
        "finetune_elr": elr,
        "seed": pre_cfg.train.seed,
        "pretrain_regime": pre.get("regime", ""),
        "pretrain_test_acc": pre.get("test_acc"),
        "finetune_regime": summary.get("regime", ""),
        "finetune_test_acc": summary.get("test_acc"),
        "finetune_train_loss": summary.get("train_loss"),
        "run_dir": str(run_dir.relative_to(root)),
    }


def _scratch_rows(spec: SweepSpec, sweep_dir: Path) -> list[dict[str, Any]]:
    out = []
    for point in expand(spec):
        s = read_json_dict(sweep_dir / point.run_dir / "summary.json") or {}
        out.append(
            {
                "elr": point.elr,
                "seed": point.seed,
                "regime": s.get("regime", ""),
                "test_acc": s.get("test_acc"),
                "train_loss": s.get("train_loss"),
            }
        )
    return out


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    cells = ({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS} for r in rows)
    write_csv(path, cells, COLUMNS)
    return path


def _mean_by(
    rows: Sequence[Mapping[str, Any]], keys: Sequence[str], value: str
) -> dict[tuple[Any, ...], float]:
    groups: dict[tuple[Any, ...], list[float]] = {}
    for row in rows:
        v = row.get(value)
        groups.setdefault(tuple(row[k] for k in keys), []).append(
            float(v) if v is not None else math.nan
        )
    return {k: float(np.mean(v)) for k, v in groups.items()}


def _majority(labels: Sequence[str]) -> str:
    """The seeds' majority regime (regimes.majority_regime); "" when no seed has a label."""
    voting = [label for label in labels if label in REGIMES]
    return majority_regime(voting) if voting else ""


def analyse(
    rows: Sequence[Mapping[str, Any]], scratch: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Best pre-train ELR (by its best seed-mean fine-tuned accuracy), its regime, the baseline.

    The baseline is the best seed-mean test accuracy among scratch ELRs whose majority label is
    ``convergence``; if none is, the best scratch run of any regime (flagged in the result).
    """
    grid = _mean_by(rows, ("pretrain_elr", "finetune_elr"), "finetune_test_acc")
    if not grid:
        raise ValueError(
            "no fine-tune rows to analyse; give at least one pre-train and one fine-tune ELR"
        )
    best_p: dict[float, tuple[float, float]] = {}
    for (p, f), acc in grid.items():
        if p not in best_p or acc > best_p[p][1]:
            best_p[p] = (f, acc)
    p_star = max(best_p, key=lambda p: (best_p[p][1], -p))
    regimes = {
        p: _majority([r["pretrain_regime"] for r in rows if r["pretrain_elr"] == p]) for p in best_p
    }
    pre_acc = _mean_by(rows, ("pretrain_elr",), "pretrain_test_acc")
    baseline = _baseline(scratch)
    best_acc = best_p[p_star][1]
    per_p = [
        {
            "elr": p,
            "regime": regimes[p],
            "pretrain_test_acc": pre_acc[(p,)],
            "best_finetune_elr": best_p[p][0],
            "best_finetune_test_acc": best_p[p][1],
        }
        for p in sorted(best_p)
    ]
    return {
        "best_pretrain_elr": p_star,
        "best_pretrain_regime": regimes[p_star],
        "best_finetune_elr": best_p[p_star][0],
        "best_finetune_test_acc": best_acc,
        "pretrain": per_p,
        "grid": [
            {"pretrain_elr": p, "finetune_elr": f, "test_acc": a}
            for (p, f), a in sorted(grid.items())
        ],
        "scratch_baseline": baseline,
        "gain_over_scratch": best_acc - baseline["test_acc"] if baseline else math.nan,
    }


def _baseline(scratch: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    accs = _mean_by([r for r in scratch if r.get("test_acc") is not None], ("elr",), "test_acc")
    if not accs:
        return None
    labels = {e: _majority([r["regime"] for r in scratch if r["elr"] == e]) for (e,) in accs}
    regime1 = [e for (e,) in accs if labels[e] == "convergence"]
    pool = regime1 or [e for (e,) in accs]
    best = max(pool, key=lambda e: accs[(e,)])
    return {
        "elr": best,
        "regime": labels[best],
        "test_acc": accs[(best,)],
        "regime1_found": bool(regime1),
    }
