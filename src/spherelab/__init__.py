"""spherelab: train scale-invariant networks on the sphere at a fixed effective learning rate.

`SphereSGD` is imported lazily so that torch-free parts (figures, the HTML report) stay light.
"""

from typing import Any

__all__ = ["SphereSGD"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "SphereSGD":
        from spherelab.optim import SphereSGD

        return SphereSGD
    raise AttributeError(f"module 'spherelab' has no attribute {name!r}")
