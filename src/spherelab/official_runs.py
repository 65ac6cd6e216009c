"""Open the paper's runs: turn official checkpoints (``checkpoint-<epoch>.pt`` files written by
the paper's public training code) into a spherelab run directory that ``diagnose`` and
``report`` read like any other (docs/run_files.md, docs/paper_parity.md).

Official checkpoints are pickles. They are loaded with ``torch.load(weights_only=True)``, which
rebuilds only tensors, containers and numbers; the only globals allowed besides torch's own are
numpy's scalar and dtype types (the paper's code stores its learning rate as a numpy float).
"""

from __future__ import annotations

import logging
import math
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spherelab.config import Config, apply_overrides
from spherelab.io import read_json_dict, write_json, write_jsonl
from spherelab.official import from_official, official_config, spherelab_state
from spherelab.sphere import si_parameters
from spherelab.train import run_files
from spherelab.train.build import Pack, build_pack
from spherelab.train.validation import validate_config

log = logging.getLogger("spherelab")
CHECKPOINT = re.compile(r"checkpoint-(\d+)\.pt")  # per epoch; checkpoint-E-I.pt (within) skipped
PAPER_HEAD_SEED = 228  # --same_last_layer; the imported weights replace the drawn head anyway
PAPER_SEED = 1  # the paper's train.py default


def _numpy_globals() -> list[Any]:
    """numpy's scalar reconstructor and dtype classes: enough for a pickled numpy float."""
    core = getattr(np, "_core", None) or np.core
    return [core.multiarray.scalar, np.dtype, *{type(np.dtype(t)) for t in (np.float64, np.int64)}]


def load_checkpoint(path: Path) -> dict[str, Any]:
    """One official checkpoint, loaded safely (weights_only); a one-line error otherwise."""
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{path} is not a checkpoint of the paper's code that loads safely ({first[:200]}); "
            "pass a checkpoint-<epoch>.pt file or a directory of them"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), Mapping):
        raise ValueError(
            f"{path} holds no 'state_dict': it is not a checkpoint of the paper's code; pass a "
            "checkpoint-<epoch>.pt file or a directory of them"
        )
    return state


def find_checkpoints(path: str | Path) -> list[Path]:
    """``path`` itself, or the ``checkpoint-<epoch>.pt`` files of a directory by epoch."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist; pass a checkpoint file or directory")
    found = [(int(m[1]), p) for p in path.iterdir() if (m := CHECKPOINT.fullmatch(p.name))]
    if not found:
        raise ValueError(f"{path} holds no checkpoint-<epoch>.pt files of the paper's code")
    return [p for _, p in sorted(found)]


def _si_norm(pack: Pack) -> float:
    return math.sqrt(
        sum(float(p.detach().double().square().sum()) for p in pack.recorder.si_params)
    )


def _lr(state: Mapping[str, Any]) -> float:
    """The learning rate of the official optimizer's first (SI) param group, or NaN."""
    try:
        return float(state["optimizer"]["param_groups"][0]["lr"])
    except (KeyError, IndexError, TypeError, ValueError):
        return math.nan


def _config(name: str, states: list[dict[str, Any]], overrides: Mapping[str, Any]) -> Config:
    """The run's config: the network read from the first state_dict, the paper's defaults for
    what a checkpoint does not hold (CIFAR-10, batch 128, seed 1), then ``overrides``."""
    first = states[0]
    net = official_config(name, first["state_dict"])
    model = {f"model.{k}": net[k] for k in ("name", "width", "head_norm", "head_bias")}
    if "depth" in net:
        model.update({"model.depth": net["depth"], "model.depth_style": net["depth_style"]})
    group = (first.get("optimizer") or {}).get("param_groups", [{}])[0]
    si = si_parameters(from_official(name, first["state_dict"]))
    elr = _lr(first) / sum(float(p.detach().double().square().sum()) for p in si)
    settings: dict[str, Any] = {
        **model,
        "model.head_seed": PAPER_HEAD_SEED,
        "data.name": "cifar10",
        "train.seed": PAPER_SEED,
        "train.epochs": max(int(states[-1].get("epoch", 1)), 1),
        "optim.momentum": float(group.get("momentum", 0.0)),
    }
    if math.isfinite(elr) and elr > 0:  # lr / rho0^2 of the paper's --fix_elr runs
        settings["optim.elr"] = elr
    cfg = apply_overrides(Config(), {**settings, **overrides})
    return validate_config(cfg)


def _load(pack: Pack, name: str, state: Mapping[str, Any], path: Path) -> None:
    try:
        pack.share.model.load_state_dict(spherelab_state(name, state["state_dict"]), strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"{path} does not fit the run's {pack.cfg.model.name} on {pack.cfg.data.name} "
            f"({str(err).splitlines()[0]}); pass the --model it was trained with and a "
            "--dataset with its number of classes"
        ) from None


def _official_metrics(state: Mapping[str, Any]) -> dict[str, float]:
    """What the paper's code logged in the checkpoint (accuracies made fractions)."""
    out = {}
    for split in ("train", "test"):
        res = state.get(f"{split}_res") or {}
        if res.get("loss") is not None:
            out[f"official_{split}_loss"] = float(res["loss"])
        if res.get("accuracy") is not None:
            out[f"official_{split}_acc"] = float(res["accuracy"]) / 100.0
    return out


def import_official(
    path: str | Path, name: str, out: str | Path, overrides: Mapping[str, Any] | None = None
) -> Path:
    """Write run directory ``out`` from the official checkpoint(s) at ``path`` of network
    ``name``: config.json, one metrics.jsonl row and one step checkpoint per official
    checkpoint (metrics measured by spherelab on the config's data), summary.json. The first
    checkpoint is the reference of ``angle_to_init`` and gives the sphere's radius."""
    paths = find_checkpoints(path)
    states = [load_checkpoint(p) for p in paths]
    cfg = _config(name, states, overrides or {})
    out = Path(out)
    run_files.prepare_dir(cfg, out, resume=False)  # refuses a directory that holds a run
    pack = build_pack([cfg], [out], packed=False)
    recorder, steps = pack.recorder, pack.steps_per_epoch
    rows = []
    for i, (p, state) in enumerate(zip(paths, states)):
        _load(pack, name, state, p)
        if i == 0:  # the sphere and the angles start at the first checkpoint
            pack.share.optimizer.param_groups[0]["radius"] = _si_norm(pack)
            recorder.init = [t.detach().clone() for t in recorder.si_params]
            recorder.prev = [t.detach().clone() for t in recorder.si_params]
            run_files.start(pack, resume=False)
        epoch = int(state.get("epoch", i))
        row = recorder.record(epoch * steps, float(epoch), ([_lr(state)], [0.0]), [0], True)[0]
        rows.append(row | _official_metrics(state))
        run_files.save(pack, epoch * steps, [0])
    write_jsonl(out / "metrics.jsonl", rows)
    member = pack.members[0]
    member.records = rows
    finite = all(math.isfinite(r["train_loss"]) for r in rows)
    run_files.finish(pack, 0, "finished" if finite else "nonfinite")
    saved = read_json_dict(out / "config.json") or {}
    source = {"network": name, "checkpoints": [str(p.resolve()) for p in paths]}
    write_json(out / "config.json", saved | {"official": source})
    log.info("imported %d official checkpoints of %s into %s", len(paths), name, out)
    return out
