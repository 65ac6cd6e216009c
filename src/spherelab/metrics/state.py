"""Shared plumbing of the metrics: model-state preservation, input checks and list-of-tensor algebra.

Every landscape metric evaluates the model with BatchNorm in TRAIN mode (batch statistics, as the
paper does for train metrics) and must leave the model exactly as it found it. ``preserved_state``
is the one place that guarantees this; the other helpers keep the metric modules free of
duplicated loops over parameter lists.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

# (model, x, y) -> (mean loss over the batch as a 0-d tensor, logits or None)
LossFn = Callable[[nn.Module, Tensor, Tensor], tuple[Tensor, Tensor | None]]
Batches = Sequence[tuple[Tensor, Tensor]]


@contextmanager
def preserved_state(model: nn.Module, train: bool = True) -> Iterator[nn.Module]:
    """Run the body in train (or eval) mode, then restore every buffer and every module's mode.

    Buffers (BatchNorm running statistics, ``num_batches_tracked``) are copied back in place, so
    references held elsewhere (optimizers, other ensembles) stay valid and a metric never causes
    running-stat drift. Parameters are not touched: the metrics never write to them (except
    ``check_hvp``, which restores them itself).
    """
    modes = [(m, m.training) for m in model.modules()]
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    model.train(train)
    try:
        yield model
    finally:
        with torch.no_grad():
            for buf, copy in saved:
                buf.copy_(copy)
        for module, mode in modes:
            module.training = mode


def check_params(params: Sequence[Tensor]) -> list[Tensor]:
    """Return ``params`` as a list after checking they can be differentiated against."""
    params = list(params)
    if not params:
        raise ValueError(
            "params is empty: pass the list of SI parameters, e.g. model.si_parameters()"
        )
    for i, p in enumerate(params):
        if not p.requires_grad or not p.is_floating_point():
            raise ValueError(
                f"params[{i}] (shape {tuple(p.shape)}, dtype {p.dtype}, requires_grad="
                f"{p.requires_grad}) is not a trainable float tensor: pass only SI parameters "
                "with requires_grad=True (a frozen head does not belong in params)"
            )
    return params


def check_batches(batches: Batches) -> list[tuple[Tensor, Tensor]]:
    """Return ``batches`` as a list after checking it is a non-empty list of (x, y) pairs."""
    batches = list(batches)
    if not batches:
        raise ValueError("batches is empty: pass a list of (x, y) tensor pairs (fixed, unshuffled)")
    for i, item in enumerate(batches):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ValueError(
                f"batches[{i}] is {type(item).__name__}, not an (x, y) pair of tensors"
            )
        if item[0].shape[0] == 0:
            raise ValueError(f"batches[{i}] is empty: drop empty batches before calling the metric")
    return batches


def check_vec(vec: Sequence[Tensor], params: Sequence[Tensor], name: str = "vec") -> list[Tensor]:
    """Check that ``vec`` has one tensor per parameter with matching shape."""
    vec = list(vec)
    shapes_v = [tuple(v.shape) for v in vec]
    shapes_p = [tuple(p.shape) for p in params]
    if shapes_v != shapes_p:
        raise ValueError(
            f"{name} has shapes {shapes_v} but params have shapes {shapes_p}: "
            f"pass one tensor per parameter, shaped like it"
        )
    return vec


def batch_weights(batches: Batches) -> tuple[list[float], int]:
    """Per-batch weights n_b / N (N = total number of samples) and N itself.

    The mean loss over the fixed batches is sum_b (n_b / N) L_b, i.e. the loss over the whole
    set when every L_b is a per-sample mean; every metric uses these weights.
    """
    sizes = [int(x.shape[0]) for x, _ in batches]
    total = sum(sizes)
    return [n / total for n in sizes], total


def dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """Inner product of two lists of tensors seen as one flat vector (0-d tensor, no host sync)."""
    return torch.stack([torch.vdot(x.reshape(-1), y.reshape(-1)) for x, y in zip(a, b)]).sum()


def flatten(tensors: Sequence[Tensor]) -> Tensor:
    """Concatenate ``tensors`` into one flat vector."""
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(flat: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """Split a flat vector back into tensors shaped like ``like`` (views, no copy)."""
    sizes = [t.numel() for t in like]
    return [chunk.view_as(t) for chunk, t in zip(torch.split(flat, sizes), like)]


def make_generator(generator: torch.Generator | None, device: torch.device) -> torch.Generator:
    """Return ``generator`` or a fresh one on ``device`` seeded from torch's global RNG."""
    if generator is not None:
        return generator
    fresh = torch.Generator(device=device)
    fresh.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
    return fresh


def random_like(
    params: Sequence[Tensor], generator: torch.Generator, kind: str = "normal"
) -> list[Tensor]:
    """Random tensors shaped like ``params``: ``normal`` N(0, 1) or ``rademacher`` +-1 entries.

    Drawn on the generator's device, then moved to each parameter's device.
    """
    out = []
    for p in params:
        if kind == "normal":
            r = torch.randn(p.shape, generator=generator, device=generator.device, dtype=p.dtype)
        elif kind == "rademacher":
            r = torch.randint(0, 2, p.shape, generator=generator, device=generator.device)
            r = r.to(p.dtype).mul_(2).sub_(1)
        else:
            raise ValueError(f"unknown probe kind {kind!r}: use 'normal' or 'rademacher'")
        out.append(r.to(p.device))
    return out


def positive(value: float, name: str) -> float:
    """Check that ``value`` is a finite positive number."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name}={value!r} must be a finite positive number")
    return float(value)
