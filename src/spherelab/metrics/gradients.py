"""Gradient statistics over fixed batches in one streamed pass: loss, accuracy, effective gradient
norm, full-batch gradient, gradient noise and signal-to-noise ratio.

Definitions (batch b has n_b samples, N = sum n_b, weights p_b = n_b / N, g_b = gradient of the
batch's mean loss w.r.t. the SI parameters, BatchNorm in train mode):

- ``loss``, ``accuracy``: sum_b p_b · (batch mean), i.e. the per-sample mean over all N samples.
- ``grad_norm``: sum_b p_b ||g_b||, the mean batch-gradient norm (the plain mean over batches
  when all batches have the same size, as in the paper).
- ``eff_grad_norm``: radius · grad_norm, the paper's "mean effective gradient norm"
  (docs/science.md#measurement-conventions): the gradient norm the same batches would have at
  the unit-norm point, since grad L(a w) = grad L(w) / a for an SI loss.
- ``grad_norm_plain``, ``eff_grad_norm_plain``: the same with the plain mean over batches,
  (1 / B) sum_b ||g_b||, exactly as the paper's analysis code averages (it differs from
  ``grad_norm`` only when the last batch is smaller).
- ``full_grad_norm``: ||g_mean|| with g_mean = sum_b p_b g_b, the gradient of the loss over all N
  samples (each batch normalized with its own statistics); ``eff_full_grad_norm`` = radius times it.
- ``grad_variance``: sum_b p_b ||g_b − g_mean||^2, the trace of the covariance of the batch
  gradient over the fixed batches (population form, 0 for a single batch).
- ``snr``: ||g_mean||^2 / grad_variance, the signal-to-noise ratio of the batch gradient
  (inf when the variance is 0). Both are scale-free in the sense that radius cancels.

The pass uses a weighted Welford update, so memory is O(#params) (running mean + one delta), and
the only host sync is the final read.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from spherelab.metrics.geometry import joint_norm
from spherelab.metrics.packed import Welford
from spherelab.metrics.state import (
    Batches,
    LossFn,
    batch_weights,
    check_batches,
    check_params,
    positive,
    preserved_state,
)


@dataclass(frozen=True)
class GradStats:
    """Result of :func:`gradient_stats`; every field is defined in the module docstring."""

    loss: float
    accuracy: float
    grad_norm: float
    eff_grad_norm: float
    full_grad_norm: float
    eff_full_grad_norm: float
    grad_variance: float
    snr: float
    grad_norm_plain: float
    eff_grad_norm_plain: float
    radius: float
    n_batches: int
    n_samples: int

    def as_dict(self) -> dict[str, float | int]:
        """The fields as a plain dict (JSON-serializable)."""
        return dataclasses.asdict(self)


def _n_correct(logits: Tensor | None, y: Tensor) -> Tensor:
    """Number of correct arg-max predictions (NaN when the loss returns no class logits)."""
    if logits is None or logits.dim() != 2 or y.is_floating_point():
        return torch.tensor(math.nan, device=y.device)
    return (logits.detach().argmax(dim=1) == y).sum()


def gradient_stats(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Batches,
    params: Sequence[Tensor],
    radius: float | None = None,
) -> GradStats:
    """Loss, accuracy and gradient statistics over ``batches`` in one pass (see module docstring).

    ``radius`` scales the effective norms; it defaults to the joint norm of ``params`` (on the
    sphere of the paper that is rho0). BatchNorm runs in train mode; the model's buffers and
    train/eval flags are restored afterwards. ``loss_fn`` must return the batch-MEAN loss.
    """
    params = check_params(params)
    batches = check_batches(batches)
    weights, n_samples = batch_weights(batches)
    rho = joint_norm(params) if radius is None else torch.tensor(positive(radius, "radius"))
    # running sums of (loss, number correct, gradient norm, plain gradient norm), weighted by
    # n_b / N (1 / B for the plain mean) where it applies
    totals = torch.zeros(4, dtype=torch.float64, device=params[0].device)
    welford = Welford(params)  # the pack of one
    with preserved_state(model, train=True), torch.enable_grad():
        for (x, y), w in zip(batches, weights):
            loss, logits = loss_fn(model, x, y)
            grads = torch.autograd.grad(loss, params)
            norm = joint_norm(grads)
            batch = torch.stack(
                [w * loss.detach(), _n_correct(logits, y), w * norm, norm / len(batches)]
            )
            totals += batch.double()
            welford.add(grads, w)
    finals = torch.stack([joint_norm(welford.mean), welford.variance()[0], rho.to(totals)])
    return _assemble(torch.cat([totals, finals.double()]).tolist(), len(batches), n_samples)


def _assemble(values: list[float], n_batches: int, n_samples: int) -> GradStats:
    loss, n_correct, grad_norm, plain_norm, full_norm, variance, rho = values
    return GradStats(
        loss=loss,
        accuracy=n_correct / n_samples,
        grad_norm=grad_norm,
        eff_grad_norm=grad_norm * rho,
        full_grad_norm=full_norm,
        eff_full_grad_norm=full_norm * rho,
        grad_variance=variance,
        snr=full_norm**2 / variance if variance > 0 else math.inf,
        grad_norm_plain=plain_norm,
        eff_grad_norm_plain=plain_norm * rho,
        radius=rho,
        n_batches=n_batches,
        n_samples=n_samples,
    )
