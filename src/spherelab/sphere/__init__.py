"""Scale invariance and the sphere: find SI weights (graph), make a model SI (recipe), prove it
numerically (check), and train on the sphere (SphereSGD and its sphere units)."""

from spherelab.sphere.check import (
    SICheck,
    check_scale_invariance,
    graph_si_parameters,
    si_parameters,
)
from spherelab.sphere.explain import SIReport, explain_scale_invariance
from spherelab.sphere.graph import NotTraceableError
from spherelab.sphere.optim import SPHERES, SphereSGD
from spherelab.sphere.recipe import freeze_head, make_scale_invariant

__all__ = [
    "SPHERES",
    "NotTraceableError",
    "SICheck",
    "SIReport",
    "SphereSGD",
    "check_scale_invariance",
    "explain_scale_invariance",
    "freeze_head",
    "graph_si_parameters",
    "make_scale_invariant",
    "si_parameters",
]
