"""Where and how a run executes: device and dtype resolution, seeding, environment facts, and
the user code a run imports (``module:attr`` factories of models and data)."""

from __future__ import annotations

import importlib
import os
import platform
import re
import sys
from importlib import metadata
from typing import Any

import torch

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present, else CPU; a bad name gets a one-line fix."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(
            f"device={name!r} is not a device; use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available here; use --device cpu")
    return device


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"dtype={name!r} is not supported; use one of {sorted(DTYPES)}")
    return DTYPES[name]


def environment(device: torch.device) -> dict[str, str]:
    """Versions and hardware, written into config.json and the report."""
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "threads": str(torch.get_num_threads()),
    }
    for pkg in ("spherelab", "torch", "numpy"):
        try:
            info[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            info[pkg] = "not installed"
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    else:
        info["device_name"] = platform.processor() or platform.machine()
    return info


# `package.module:attr` (a user factory); npz:PATH and synthetic:SPEC are dataset names instead.
_IMPORT_SPEC = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
_NOT_IMPORTS = ("npz:", "synthetic:")


def is_import_spec(name: str) -> bool:
    """Whether ``name`` names user code as ``module:attr`` (e.g. ``my_pkg.nets:make_net``)."""
    return bool(_IMPORT_SPEC.fullmatch(name)) and not name.startswith(_NOT_IMPORTS)


def import_object(spec: str, what: str) -> Any:
    """The object ``module:attr`` names, importable from sys.path or the current directory.
    Raises ValueError with a one-line message naming ``what`` (e.g. "model") and the fix."""
    module_name, _, attr = spec.partition(":")
    if not is_import_spec(spec):
        raise ValueError(f"{what}={spec!r} is not of the form module:attr (e.g. my_pkg.nets:make)")
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.append(cwd)  # `spherelab` as a console script does not see the cwd otherwise
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - a user module may raise anything on import
        raise ValueError(
            f"{what}={spec!r}: cannot import {module_name!r} ({type(err).__name__}: {err}); "
            "run from the directory that holds it or add it to PYTHONPATH"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(
                f"{what}={spec!r}: module {module_name!r} has no attribute {attr!r}; "
                "name a function defined in it"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{what}={spec!r} is a {type(obj).__name__}, not a callable factory")
    return obj
