"""Check a Config against the registries before any data is loaded or any time is spent."""

from __future__ import annotations

from spherelab.config import Config
from spherelab.data import available_datasets
from spherelab.models import available_models
from spherelab.runtime import DTYPES
from spherelab.sphere.optim import SPHERES
from spherelab.train.losses import LOSSES
from spherelab.train.optimizer import MODES
from spherelab.train.schedules import SCHEDULES

LOGS = ("", "tensorboard")  # train.log: "" = metrics.jsonl only


def _one_of(what: str, value: object, valid: list[str] | tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{what}={value!r} is unknown; valid: {', '.join(map(str, valid))}")


def validate_config(cfg: Config) -> Config:
    """Raise ValueError naming the first bad value and the fix; return cfg when it is sound."""
    _one_of("model", cfg.model.name, available_models())
    if not (cfg.data.name.startswith("npz:") or cfg.data.name.startswith("synthetic")):
        _one_of("dataset", cfg.data.name, available_datasets())
    _one_of("optim.mode", cfg.optim.mode, MODES)
    _one_of("optim.sphere", cfg.optim.sphere, [s for s in SPHERES if s != "none"])
    _one_of("optim.schedule", cfg.optim.schedule, SCHEDULES)
    _one_of("train.dtype", cfg.train.dtype, list(DTYPES))
    _one_of("train.loss", cfg.train.loss, list(LOSSES))
    if cfg.train.log not in LOGS:
        raise ValueError(
            f"train.log={cfg.train.log!r} is unknown; valid: tensorboard (or empty: "
            "metrics.jsonl only)"
        )
    if cfg.optim.mode == "sphere" and not cfg.optim.elr > 0:
        raise ValueError(f"elr={cfg.optim.elr} must be > 0 (e.g. --elr 1e-3)")
    if cfg.optim.mode == "conventional" and not cfg.optim.lr > 0:
        raise ValueError(f"optim.lr={cfg.optim.lr} must be > 0 (e.g. --set optim.lr=0.1)")
    if not 0 <= cfg.optim.momentum < 1:
        raise ValueError(f"optim.momentum={cfg.optim.momentum} must be in [0, 1)")
    if cfg.train.steps is None and cfg.train.epochs < 1:
        raise ValueError(f"epochs={cfg.train.epochs} must be >= 1")
    if cfg.train.steps is not None and cfg.train.steps < 1:
        raise ValueError(f"train.steps={cfg.train.steps} must be >= 1")
    if not 0 <= cfg.data.label_noise <= 1:
        raise ValueError(f"data.label_noise={cfg.data.label_noise} must be a fraction in [0, 1]")
    return cfg
