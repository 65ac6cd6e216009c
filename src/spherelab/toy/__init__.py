"""The quadratic SI toy model: its vectorised simulation (model), the theory that predicts its
three regimes (theory), the ELR sweep against that theory (run) and its figures."""

from spherelab.toy.model import QuadraticSphereToy, ToySimulation
from spherelab.toy.run import run_toy, sphere_paths

__all__ = ["QuadraticSphereToy", "ToySimulation", "run_toy", "sphere_paths"]
