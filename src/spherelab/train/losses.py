"""The training losses, defined once for a pack of K runs: per-member batch means from logits
[K, B, classes]. A single run is the pack of one; `get_loss` wraps the same formulas as
`loss_fn(model, x, y) -> (batch-mean loss, logits)`, the convention of spherelab.metrics."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torch.nn import functional as F

LossFn = Callable[[nn.Module, Tensor, Tensor], tuple[Tensor, Tensor]]
LOSSES = ("cross_entropy", "mse")  # mean cross-entropy in nats; squared loss on one-hot targets


def _member_labels(logits: Tensor, y: Tensor) -> Tensor:
    k, b, _ = logits.shape
    return y.expand(k, b) if y.dim() == 1 else y


def member_losses(logits: Tensor, y: Tensor, loss: str) -> Tensor:
    """Batch-mean loss of each member [K] from logits [K, B, classes] and labels [K, B] (or [B]
    shared by all members). ``mse`` sums the squared error over classes, averages over samples."""
    k, b, c = logits.shape
    labels = _member_labels(logits, y)
    if loss == "cross_entropy":
        flat = F.cross_entropy(logits.reshape(k * b, c), labels.reshape(k * b), reduction="none")
        return flat.view(k, b).mean(1)
    if loss == "mse":
        target = F.one_hot(labels, c).to(logits.dtype)
        return (logits - target).square().sum(-1).mean(1)
    raise ValueError(f"loss={loss!r} is unknown; use one of {LOSSES}")


def member_correct(logits: Tensor, y: Tensor) -> Tensor:
    """Number of correct arg-max predictions of each member [K]."""
    return (logits.detach().argmax(-1) == _member_labels(logits, y)).sum(1)


def get_loss(name: str) -> LossFn:
    """`loss_fn(model, x, y) -> (batch-mean loss, logits)` of one model, by member_losses."""
    if name not in LOSSES:
        raise ValueError(f"loss={name!r} is unknown; use one of {LOSSES}")

    def loss_fn(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        logits = model(x)
        return member_losses(logits.unsqueeze(0), y, name)[0], logits

    loss_fn.__name__ = name
    return loss_fn


cross_entropy = get_loss("cross_entropy")
squared = get_loss("mse")


def batch_sums(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(sum of per-sample losses, number correct) for a batch, kept on the device."""
    loss, logits = loss_fn(model, x, y)
    return loss.detach() * len(y), (logits.argmax(-1) == y).sum()
