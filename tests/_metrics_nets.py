"""Tiny float64 networks, data and brute-force references shared by the metrics tests."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.func import functional_call


def frozen_head(d_in: int, classes: int) -> nn.Linear:
    head = nn.Linear(d_in, classes, bias=False)
    head.weight.requires_grad_(False)
    return head


def bn_mlp(
    d_in: int = 5,
    widths: tuple[int, ...] = (6, 4),
    classes: int = 3,
    act: type[nn.Module] = nn.ReLU,
    eps: float = 1e-5,
    seed: int = 0,
) -> nn.Sequential:
    """Linear(no bias) -> BatchNorm1d(affine=False) -> act blocks and a frozen head: fully SI."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for width in widths:
        layers += [
            nn.Linear(d_in, width, bias=False),
            nn.BatchNorm1d(width, affine=False, eps=eps),
            act(),
        ]
        d_in = width
    return nn.Sequential(*layers, frozen_head(d_in, classes)).double()


def bn_convnet(channels: int = 3, classes: int = 2, seed: int = 0) -> nn.Sequential:
    """Conv2d(no bias) -> BatchNorm2d(affine=False) -> ReLU -> pool -> frozen head: fully SI."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels, affine=False),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        frozen_head(channels, classes),
    ).double()


def plain_mlp(d_in: int = 5, classes: int = 3, seed: int = 0) -> nn.Sequential:
    """A smooth network WITHOUT normalization: not SI, so <g, w> != 0."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(d_in, 6, bias=False), nn.Tanh(), frozen_head(6, classes)
    ).double()


def trainable(model: nn.Module) -> list[Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def cross_entropy(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    logits = model(x)
    return nn.functional.cross_entropy(logits, y), logits


def make_batches(
    sizes: tuple[int, ...] = (8, 8, 5),
    shape: tuple[int, ...] = (5,),
    classes: int = 3,
    seed: int = 1,
) -> list[tuple[Tensor, Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(n, *shape, generator=gen, dtype=torch.float64),
            torch.randint(0, classes, (n,), generator=gen),
        )
        for n in sizes
    ]


def mean_loss_of_flat(model: nn.Module, batches, params: list[Tensor]):
    """The mean loss over the batches as a function of the flattened ``params`` (train-mode BN)."""
    names = {id(p): n for n, p in model.named_parameters()}
    keys = [names[id(p)] for p in params]
    total = sum(x.shape[0] for x, _ in batches)
    model = copy.deepcopy(model).train()  # train-mode BN, and the original's buffers stay put

    def loss(flat: Tensor) -> Tensor:
        chunks = torch.split(flat, [p.numel() for p in params])
        override = {k: c.view_as(p) for k, c, p in zip(keys, chunks, params)}
        out = flat.new_zeros(())
        for x, y in batches:
            logits = functional_call(model, override, (x,))
            out = out + x.shape[0] / total * nn.functional.cross_entropy(logits, y)
        return out

    return loss


def full_hessian(model: nn.Module, batches, params: list[Tensor]) -> Tensor:
    """The dense Hessian of the mean loss w.r.t. the flattened ``params``."""
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    return torch.autograd.functional.hessian(
        mean_loss_of_flat(model, batches, params), flat, vectorize=True
    )


def full_gradient(model: nn.Module, batches, params: list[Tensor]) -> Tensor:
    flat = torch.cat([p.detach().reshape(-1) for p in params]).requires_grad_(True)
    return torch.autograd.grad(mean_loss_of_flat(model, batches, params)(flat), flat)[0]


def scale_(params: list[Tensor], factor: float) -> None:
    with torch.no_grad():
        for p in params:
            p.mul_(factor)
