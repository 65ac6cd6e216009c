"""spherelab: train scale-invariant networks on the sphere at a fixed effective learning rate.

The public API is importable from here. Names load on first use (PEP 562), so importing a
torch-free part (spherelab.report, spherelab.regimes, spherelab.io) never imports torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_API = {
    "SphereSGD": "spherelab.sphere",
    "make_scale_invariant": "spherelab.sphere",
    "check_scale_invariance": "spherelab.sphere",
    "explain_scale_invariance": "spherelab.sphere",
    "si_parameters": "spherelab.sphere",
    "freeze_head": "spherelab.sphere",
    "build_model": "spherelab.models",
    "available_models": "spherelab.models",
    "load_dataset": "spherelab.data",
    "available_datasets": "spherelab.data",
    "BatchSampler": "spherelab.data",
    "Config": "spherelab.config",
    "apply_overrides": "spherelab.config",
    "load_config": "spherelab.config",
    "train_run": "spherelab.train",
    "train_ensemble": "spherelab.train",
    "classify": "spherelab.regimes",
    "classify_records": "spherelab.regimes",
    "estimate_boundaries": "spherelab.regimes",
    "SweepSpec": "spherelab.sweep",
    "run_sweep": "spherelab.sweep",
    "write_report": "spherelab.report",
    "QuadraticSphereToy": "spherelab.toy",
    "run_toy": "spherelab.toy",
    "RegimeMonitor": "spherelab.monitor",
}

__all__ = [
    "BatchSampler",
    "Config",
    "QuadraticSphereToy",
    "RegimeMonitor",
    "SphereSGD",
    "SweepSpec",
    "apply_overrides",
    "available_datasets",
    "available_models",
    "build_model",
    "check_scale_invariance",
    "classify",
    "classify_records",
    "estimate_boundaries",
    "explain_scale_invariance",
    "freeze_head",
    "load_config",
    "load_dataset",
    "make_scale_invariant",
    "run_sweep",
    "run_toy",
    "si_parameters",
    "train_ensemble",
    "train_run",
    "write_report",
]

if TYPE_CHECKING:
    from spherelab.config import Config, apply_overrides, load_config
    from spherelab.data import BatchSampler, available_datasets, load_dataset
    from spherelab.models import available_models, build_model
    from spherelab.monitor import RegimeMonitor
    from spherelab.regimes import classify, classify_records, estimate_boundaries
    from spherelab.report import write_report
    from spherelab.sphere import (
        SphereSGD,
        check_scale_invariance,
        explain_scale_invariance,
        freeze_head,
        make_scale_invariant,
        si_parameters,
    )
    from spherelab.sweep import SweepSpec, run_sweep
    from spherelab.toy import QuadraticSphereToy, run_toy
    from spherelab.train import train_ensemble, train_run


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'spherelab' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
