"""Check a Config against the registries before any data is loaded or any time is spent."""

from __future__ import annotations

import math

from spherelab.config import Config
from spherelab.data import NOISE_STYLES, NORMALIZATIONS, PAD_MODES, SUBSETS, available_datasets
from spherelab.models import available_models
from spherelab.runtime import DTYPES, import_object, is_import_spec
from spherelab.sphere.optim import MOMENTUM_STYLES, SPHERES
from spherelab.train.checkpoints import RECORD_SCHEDULES
from spherelab.train.losses import LOSSES
from spherelab.train.optimizer import MODES, check_paper_units
from spherelab.train.schedules import SCHEDULES

LOGS = ("", "tensorboard")  # train.log: "" = metrics.jsonl only


def _one_of(what: str, value: object, valid: list[str] | tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{what}={value!r} is unknown; valid: {', '.join(map(str, valid))}")


def validate_config(cfg: Config) -> Config:
    """Raise ValueError naming the first bad value and the fix; return cfg when it is sound."""
    if is_import_spec(cfg.model.name):
        import_object(cfg.model.name, "model")  # a bad path fails now, not after data loads
    else:
        _one_of("model", cfg.model.name, available_models())
    if is_import_spec(cfg.data.name):
        import_object(cfg.data.name, "dataset")
    elif not (cfg.data.name.startswith("npz:") or cfg.data.name.startswith("synthetic")):
        _one_of("dataset", cfg.data.name, available_datasets())
    _one_of("data.subset", cfg.data.subset, SUBSETS)
    _one_of("train.record_schedule", cfg.train.record_schedule, RECORD_SCHEDULES)
    _one_of("data.label_noise_style", cfg.data.label_noise_style, NOISE_STYLES)
    _one_of("data.normalize", cfg.data.normalize, NORMALIZATIONS)
    _one_of("data.augment_pad", cfg.data.augment_pad, PAD_MODES)
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
    if cfg.optim.mode == "sphere" and not 0 < cfg.optim.elr < math.inf:
        raise ValueError(f"elr={cfg.optim.elr} must be > 0 and finite (e.g. --elr 1e-3)")
    if cfg.optim.mode == "conventional" and not 0 < cfg.optim.lr < math.inf:
        raise ValueError(
            f"optim.lr={cfg.optim.lr} must be > 0 and finite (e.g. --set optim.lr=0.1)"
        )
    if cfg.data.batch_size < 0:
        raise ValueError(
            f"batch_size={cfg.data.batch_size} must be >= 0 (0 = full-batch gradient descent)"
        )
    if not 0 <= cfg.optim.momentum < 1:
        raise ValueError(f"optim.momentum={cfg.optim.momentum} must be in [0, 1)")
    _one_of("optim.momentum_style", cfg.optim.momentum_style, MOMENTUM_STYLES)
    if cfg.optim.mode == "sphere":
        check_paper_units(cfg.optim)
    if not cfg.optim.sphere_weight_decay >= 0:
        raise ValueError(
            f"optim.sphere_weight_decay={cfg.optim.sphere_weight_decay} must be >= 0 (e.g. 0)"
        )
    if cfg.train.ghost_batch < 0:
        raise ValueError(
            f"train.ghost_batch={cfg.train.ghost_batch} must be >= 0 (0 = off, the paper: 128)"
        )
    if cfg.train.steps is None and cfg.train.epochs < 1:
        raise ValueError(f"epochs={cfg.train.epochs} must be >= 1")
    if cfg.train.steps is not None and cfg.train.steps < 1:
        raise ValueError(f"train.steps={cfg.train.steps} must be >= 1")
    if not 0 <= cfg.data.label_noise <= 1:
        raise ValueError(f"data.label_noise={cfg.data.label_noise} must be a fraction in [0, 1]")
    return cfg
