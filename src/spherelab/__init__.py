"""spherelab: train scale-invariant networks on the sphere at a fixed effective learning rate."""

from spherelab.optim import SphereSGD

__all__ = ["SphereSGD"]
__version__ = "0.1.0"
