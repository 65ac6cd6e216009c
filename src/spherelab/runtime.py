"""Where and how a run executes: device and dtype resolution, deterministic mode, environment
facts, and the user code a run imports (``module:attr`` factories of models and data)."""

from __future__ import annotations

import importlib
import os
import platform
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
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


# The intra-op threads of a deterministic run: CPU reductions (matmul, sums) split their work
# by thread count, so the count fixes the order of float additions; one is the same everywhere.
DETERMINISTIC_THREADS = 1
# cuBLAS is deterministic only with a fixed workspace; read when its first handle is created.
CUBLAS_WORKSPACE = ":4096:8"


@contextmanager
def deterministic_mode(enabled: bool) -> Iterator[None]:
    """Within: DETERMINISTIC_THREADS intra-op threads, deterministic algorithms and no cuDNN
    autotuning; everything is restored on exit. A no-op when not `enabled`.

    An op without a deterministic kernel warns rather than stops the run (torch's warn_only):
    on CUDA the conv models' adaptive pooling backward is one, so bitwise equality is promised
    on the CPU, where every op of the zoo has a deterministic kernel."""
    if not enabled:
        yield
        return
    before = (
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.set_num_threads(DETERMINISTIC_THREADS)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1], warn_only=before[2])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[3:]


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
