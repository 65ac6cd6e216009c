"""Training losses as `loss_fn(model, x, y) -> (batch-mean loss, logits)` (the metrics' convention)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torch.nn import functional as F

LossFn = Callable[[nn.Module, Tensor, Tensor], tuple[Tensor, Tensor]]


def cross_entropy(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy in nats (the paper's loss)."""
    logits = model(x)
    return F.cross_entropy(logits, y), logits


def squared(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Squared loss on one-hot targets, summed over classes and averaged over samples
    (the follow-up's MSE variant)."""
    logits = model(x)
    target = F.one_hot(y, logits.shape[-1]).to(logits.dtype)
    return (logits - target).square().sum(-1).mean(), logits


LOSSES: dict[str, LossFn] = {"cross_entropy": cross_entropy, "mse": squared}


def get_loss(name: str) -> LossFn:
    if name not in LOSSES:
        raise ValueError(f"loss={name!r} is unknown; use one of {sorted(LOSSES)}")
    return LOSSES[name]


def batch_sums(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(sum of per-sample losses, number correct) for a batch, kept on the device."""
    loss, logits = loss_fn(model, x, y)
    return loss.detach() * len(y), (logits.argmax(-1) == y).sum()
