"""Import the paper's public code (a directory holding train.py, nets/, get_info_funcs.py) on a CPU.

That code imports torchvision, tqdm, tabulate and gpytorch at module level and calls `.cuda()`;
none of those is needed to build its networks, take its training steps or call its metrics on
tensors we give it. `load_official(path)` stubs the missing modules, makes `.cuda()` a no-op
while the code is imported (and for `cuda_noop()` blocks), and returns the modules by name.

Used by the parity tests and by the scripts that write the parity fixtures; the path is always
an argument (tests default to OFFICIAL_DIR, the checkout beside this repository).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

OFFICIAL_DIR = Path(__file__).resolve().parents[2] / "shared" / "official"
MODULES = ("nets", "training_utils", "train", "get_info_funcs")


class _Anything:
    """Stands in for any torchvision transform / dataset class: accepts and ignores arguments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        return x


def _stub_attribute(attr: str) -> Any:
    if attr.startswith("__"):  # e.g. __file__: tools that walk sys.modules (inspect) ask for it
        raise AttributeError(attr)
    return _Anything


STUB_MARK = "_spherelab_stand_in"


def is_stub(module: object) -> bool:
    """True for a stand-in module made here (not a real installed package)."""
    return isinstance(module, types.ModuleType) and STUB_MARK in module.__dict__


def _stub(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(
        name, None
    )  # importlib.util.find_spec reads it
    module.__getattr__ = _stub_attribute  # type: ignore[method-assign]
    module.__dict__[STUB_MARK] = True
    for key, value in attrs.items():
        setattr(module, key, value)
    return module


# Stubbed functions whose result is used: train.py splits its tabulate table into >= 3 lines.
STUB_ATTRS: dict[str, dict[str, Any]] = {"tabulate": {"tabulate": lambda *a, **k: "\n\n"}}


def _install_stubs() -> None:
    """Stub only what is missing, so a real installed package is never shadowed."""
    names = [
        "torchvision",
        "torchvision.transforms",
        "torchvision.datasets",
        "torchvision.datasets.vision",
        "tqdm",
        "tabulate",
        "gpytorch",
        "gpytorch.utils",
        "gpytorch.utils.lanczos",
    ]
    for name in names:
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - any import failure means: stub it
            sys.modules[name] = _stub(name, **STUB_ATTRS.get(name, {}))
    vision = sys.modules["torchvision"]
    for child in ("transforms", "datasets"):
        if not isinstance(getattr(vision, child, None), types.ModuleType):
            setattr(vision, child, sys.modules[f"torchvision.{child}"])


@contextlib.contextmanager
def cuda_noop() -> Iterator[None]:
    """Make `Tensor.cuda()` and `Module.cuda()` return self inside the block."""
    saved = torch.Tensor.cuda, torch.nn.Module.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.nn.Module.cuda = saved  # type: ignore[method-assign]


def load_official(path: str | Path = OFFICIAL_DIR) -> dict[str, types.ModuleType]:
    """The official modules `nets`, `training_utils`, `train`, `get_info_funcs`, by name."""
    path = Path(path).resolve()
    if not (path / "train.py").is_file():
        raise FileNotFoundError(f"no official code at {path} (expected train.py there)")
    _install_stubs()
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    argv = sys.argv
    sys.argv = [argv[0]]  # their parsers read sys.argv at import time in some modules
    try:
        with cuda_noop():
            return {name: importlib.import_module(name) for name in MODULES}
    finally:
        sys.argv = argv
