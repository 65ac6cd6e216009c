"""Landscape metrics of SI networks: geometry on the sphere, gradient statistics and curvature.

All metrics take ``(model, loss_fn, batches, params)``: ``loss_fn(model, x, y) -> (mean loss,
logits)``, ``batches`` a fixed list of (x, y) pairs, ``params`` the SI parameters. They run
BatchNorm in train mode, stream over the batches (memory O(#params)) and leave the model as found.
"""

from spherelab.metrics.curvature import (
    Spectrum,
    check_hvp,
    effective_sharpness,
    hutchinson_trace,
    hvp,
    lanczos_topk,
    mean_rayleigh_quotient,
    riemannian_hvp,
    riemannian_topk,
    top_eigenvalues,
)
from spherelab.metrics.fisher import fisher_topk, fisher_trace, fisher_vp
from spherelab.metrics.geometry import (
    AngularUpdateTracker,
    angle,
    angle_tensor,
    angle_to_init,
    cosine,
    effective_elr,
    equilibrium_angle,
    joint_norm,
    per_layer_angles,
    per_layer_effective_elr,
    per_tensor_norms,
)
from spherelab.metrics.gradients import GradStats, gradient_stats
from spherelab.metrics.lanczos import lanczos
from spherelab.metrics.state import LossFn, preserved_state

__all__ = [
    "AngularUpdateTracker",
    "GradStats",
    "LossFn",
    "Spectrum",
    "angle",
    "angle_tensor",
    "angle_to_init",
    "check_hvp",
    "cosine",
    "effective_elr",
    "effective_sharpness",
    "equilibrium_angle",
    "fisher_topk",
    "fisher_trace",
    "fisher_vp",
    "gradient_stats",
    "hutchinson_trace",
    "hvp",
    "joint_norm",
    "lanczos",
    "lanczos_topk",
    "mean_rayleigh_quotient",
    "per_layer_angles",
    "per_layer_effective_elr",
    "per_tensor_norms",
    "preserved_state",
    "riemannian_hvp",
    "riemannian_topk",
    "top_eigenvalues",
]
