"""A run directory's files: refuse or reuse what is there, restore and save checkpoints, write
the summary (with the regime label), and relabel a finished run.

The contract (DESIGN.md §2): config.json, metrics.jsonl, summary.json, checkpoints/.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from spherelab.config import Config, from_dict
from spherelab.regimes import FINAL_STATUSES, classify_records
from spherelab.train import checkpoints as ckpt

if TYPE_CHECKING:
    from spherelab.train.engine import Run

log = logging.getLogger("spherelab")


def prepare_dir(cfg: Config, out: Path, resume: bool) -> dict[str, Any] | None:
    """Refuse a directory that holds a different run; return a finished run's summary."""
    cfg_path = out / "config.json"
    if not cfg_path.exists():
        out.mkdir(parents=True, exist_ok=True)
        return None
    try:
        saved = from_dict(json.loads(cfg_path.read_text(encoding="utf-8")))
    except (ValueError, json.JSONDecodeError):
        raise ValueError(f"{out} holds an unreadable config.json; choose another --out") from None
    if comparable(saved) != comparable(cfg):
        raise ValueError(
            f"{out} already holds a different run (its config.json differs); "
            "choose another --out or delete that directory"
        )
    summary_path = out / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        if summary.get("status") in FINAL_STATUSES:
            if resume:
                return summary
            raise ValueError(
                f"{out} already holds this finished run; use another --out, or "
                "--resume to reuse its result"
            )
    if not resume and (out / "metrics.jsonl").exists():
        raise ValueError(
            f"{out} holds an unfinished run; pass --resume to continue it or choose another --out"
        )
    return None


def comparable(cfg: Config) -> dict[str, Any]:
    """The config minus where it runs: a run may resume on another device."""
    data = cfg.to_dict()
    data["train"].pop("device")
    return data


def restore(run: Run, out: Path) -> tuple[list[dict[str, Any]], int]:
    """Load the latest checkpoint; keep the records up to it. (records, step)."""
    paths = ckpt.list_checkpoints(out)
    if not paths:
        return [], 0
    # On the CPU first: RNG states must stay CPU ByteTensors (load_state_dict moves the rest).
    state = ckpt.load_checkpoint(paths[-1], "cpu")
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.sampler.load_state_dict(state["sampler"])
    torch.set_rng_state(state["torch_rng"])
    if run.aug_gen is not None:
        run.aug_gen.set_state(state["aug_rng"])
    run.recorder.init = ckpt.load_init(out, run.device)
    run.recorder.prev = [t.to(run.device) for t in state["prev"]]
    run.remaining = deque(t.to(run.device) for t in state["remaining"])
    step = int(state["step"])
    records = [r for r in ckpt.read_records(out / "metrics.jsonl") if r["step"] <= step]
    ckpt.write_records(out / "metrics.jsonl", records)
    log.info("resumed %s at step %d", out, step)
    return records, step


def save(run: Run, out: Path, step: int, remaining: deque) -> None:
    if run.cfg.train.checkpoints == "none":
        return
    if run.cfg.train.checkpoints == "last" and step != run.total_steps:
        return
    payload = {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "sampler": run.sampler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "aug_rng": run.aug_gen.get_state() if run.aug_gen is not None else None,
        "prev": run.recorder.prev,
        "remaining": [t.cpu() for t in remaining],
        "step": step,
    }
    ckpt.save_checkpoint(out, step, payload)


def label(
    records: list[dict[str, Any]], status: str, num_classes: int | None
) -> tuple[str, dict[str, Any]]:
    """(regime, the statistics behind it) of a run's records; a non-finite run is divergence
    however short, a run too short to have a trajectory is `unclassified`."""
    try:
        verdict = classify_records(records, num_classes=num_classes)
    except ValueError as err:
        return ("divergence" if status == "nonfinite" else "unclassified"), {"reason": str(err)}
    return ("divergence" if status == "nonfinite" else verdict.regime), verdict.stats


def finish(run: Run, out: Path, records: list[dict[str, Any]], status: str) -> dict[str, Any]:
    regime, stats = label(records, status, run.data.num_classes)
    summary = dict(records[-1]) | {
        "status": status,
        "regime": regime,
        "regime_stats": stats,
        "elr_config": run.cfg.optim.elr,
        "seed": run.cfg.train.seed,
        "num_classes": run.data.num_classes,
        "init_train_loss": records[0]["train_loss"],
        "regime_note": regime_note(records),
    }
    ckpt.write_json(out / "summary.json", summary)
    return summary


# Fewer post-init records than this make a trajectory too short for a trustworthy label.
RELIABLE_RECORDS = 4


def regime_note(records: list[dict[str, Any]]) -> str:
    """'' when the label rests on enough records, else a warning that says what to change."""
    after_init = sum(1 for r in records if r["step"] > 0)
    if after_init >= RELIABLE_RECORDS:
        return ""
    return (
        f"only {after_init} records after init: too short for a reliable regime label; "
        "train longer or raise train.records"
    )


def relabel_run(run_dir: str | Path) -> dict[str, Any]:
    """Re-classify a finished run from its metrics.jsonl (after the classifier changed) and
    rewrite summary.json; returns the new summary."""
    out = Path(run_dir)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    records = ckpt.read_records(out / "metrics.jsonl")
    regime, stats = label(records, summary.get("status", "finished"), summary.get("num_classes"))
    summary.update(regime=regime, regime_stats=stats, regime_note=regime_note(records))
    ckpt.write_json(out / "summary.json", summary)
    return summary
