"""The training losses, in one file: `batch_loss` of one model's batch, `member_losses` of the
K members of a packed module (the same formulas, per member), and `get_loss`, which wraps
batch_loss as `loss_fn(model, x, y) -> (batch-mean loss, logits)` for spherelab.metrics."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torch.nn import functional as F

LossFn = Callable[[nn.Module, Tensor, Tensor], tuple[Tensor, Tensor]]
# mean cross-entropy in nats; squared error on one-hot targets summed over classes (mse) or
# averaged over them (mse_class_mean: the paper's squared loss, mse / number of classes)
LOSSES = ("cross_entropy", "mse", "mse_class_mean")


def batch_loss(logits: Tensor, y: Tensor, loss: str) -> Tensor:
    """The batch-mean loss of one model's logits [B, classes] and labels [B]: mean
    cross-entropy in nats, or the squared error on one-hot targets summed (``mse``) or
    averaged (``mse_class_mean``) over classes, averaged over samples."""
    if loss == "cross_entropy":
        return F.cross_entropy(logits, y)
    return _squared(logits, y, loss).mean()


def _squared(logits: Tensor, labels: Tensor, loss: str) -> Tensor:
    """Per-sample squared error [...] of logits [..., classes] against one-hot labels [...]."""
    if loss not in ("mse", "mse_class_mean"):
        raise ValueError(f"loss={loss!r} is unknown; use one of {LOSSES}")
    classes = logits.shape[-1]
    per_sample = (logits - F.one_hot(labels, classes).to(logits.dtype)).square().sum(-1)
    return per_sample / classes if loss == "mse_class_mean" else per_sample


def _member_labels(logits: Tensor, y: Tensor) -> Tensor:
    k, b, _ = logits.shape
    return y.expand(k, b) if y.dim() == 1 else y


def member_losses(logits: Tensor, y: Tensor, loss: str) -> Tensor:
    """batch_loss of each member [K] from logits [K, B, classes] and labels [K, B] (or [B]
    shared by all members), computed for all members at once."""
    k, b, c = logits.shape
    labels = _member_labels(logits, y)
    if loss == "cross_entropy":
        flat = F.cross_entropy(logits.reshape(k * b, c), labels.reshape(k * b), reduction="none")
        return flat.view(k, b).mean(1)
    return _squared(logits, labels, loss).mean(1)


def member_correct(logits: Tensor, y: Tensor) -> Tensor:
    """Number of correct arg-max predictions of each member [K]."""
    return (logits.detach().argmax(-1) == _member_labels(logits, y)).sum(1)


def get_loss(name: str) -> LossFn:
    """`loss_fn(model, x, y) -> (batch-mean loss, logits)` of one model (batch_loss)."""
    if name not in LOSSES:
        raise ValueError(f"loss={name!r} is unknown; use one of {LOSSES}")

    def loss_fn(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        logits = model(x)
        return batch_loss(logits, y, name), logits

    loss_fn.__name__ = name
    return loss_fn


cross_entropy = get_loss("cross_entropy")


def batch_sums(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(sum of per-sample losses, number correct) for a batch, kept on the device."""
    loss, logits = loss_fn(model, x, y)
    return loss.detach() * len(y), (logits.argmax(-1) == y).sum()
