"""The training step of a pack (a single run is the pack of one): eager, torch.compile'd, or one
CUDA graph replay.

The step never reads the device: per-member losses stay a [K] tensor that the loop accumulates
and reads once per epoch/record.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from spherelab.train.losses import batch_loss, member_losses

StepFn = Callable[[Tensor, Tensor], Tensor]


def eager_step(
    model: Callable[[Tensor], Tensor], opt: torch.optim.Optimizer, loss: str, packed: bool = True
) -> StepFn:
    """Forward, backward, one optimizer step; returns the detached [K] losses. A packed module
    (logits [K, B, classes]) backpropagates the SUM of its member losses: member k's slice of
    that gradient is member k's own gradient. One run's model (`packed=False`) backpropagates
    its batch loss, returned as its pack of one's [1]."""

    def step(x: Tensor, y: Tensor) -> Tensor:
        out = model(x)
        losses = member_losses(out, y, loss) if packed else batch_loss(out, y, loss)
        opt.zero_grad(set_to_none=True)
        (losses.sum() if packed else losses).backward()
        opt.step()
        return losses.detach().reshape(-1)  # [K]; [1] for one run's 0-d batch loss

    return step


def ghost_step(
    model: Callable[[Tensor], Tensor],
    opt: torch.optim.Optimizer,
    loss: str,
    ghost: int,
    generator: torch.Generator | None = None,
) -> StepFn:
    """One run's step over a batch in chunks of `ghost` samples ("ghost batches"), each its own
    forward (so each gets its own BatchNorm statistics in train mode), the gradients summed with
    weight chunk/batch into one optimizer step: the paper's full-batch GD, which accumulates
    the gradient of the mean loss over its loader's batches. With a CPU `generator` the batch is
    first shuffled (a fresh order each step, as the paper's loader reshuffles every epoch);
    without one the chunks are taken in order. Returns the batch-mean loss as [1]."""

    def step(x: Tensor, y: Tensor) -> Tensor:
        n = len(y)
        opt.zero_grad(set_to_none=True)
        total = torch.zeros((), dtype=torch.float64, device=y.device)
        if generator is None:
            chunks = [(x[i : i + ghost], y[i : i + ghost]) for i in range(0, n, ghost)]
        else:
            order = torch.randperm(n, generator=generator).to(y.device).split(ghost)
            chunks = [(x[idx], y[idx]) for idx in order]
        for xc, yc in chunks:
            part = batch_loss(model(xc), yc, loss) * (len(yc) / n)
            part.backward()
            total += part.detach()
        opt.step()
        return total.reshape(1)

    return step


def _state_tensors(model: nn.Module, opt: torch.optim.Optimizer) -> list[Tensor]:
    tensors = list(model.parameters()) + list(model.buffers())
    return tensors + [v for s in opt.state.values() for v in s.values() if isinstance(v, Tensor)]


def cuda_graph_step(
    model: nn.Module, opt: torch.optim.Optimizer, loss: str, x: Tensor, y: Tensor, warmup: int = 3
) -> StepFn:
    """Capture the whole step (forward, backward, optimizer) as one CUDA graph on static copies
    of x and y; the returned function copies a batch in and replays. Warm-up steps run on a side
    stream and are undone (optimizer state they create is zeroed: a zero momentum buffer gives
    the same first step as none), so the trajectory equals the eager one. The optimizer's
    per-member ELR and radius must be device tensors updated in place, and every batch must
    have the shape of x (the caller runs a smaller last batch eagerly)."""
    if x.device.type != "cuda":
        raise ValueError(
            f"cuda_graph needs the data on a CUDA device, got {x.device}; "
            "use train.device=cuda or turn cuda_graph off"
        )
    step = eager_step(model, opt, loss)
    static_x, static_y = x.clone(), y.clone()
    saved = [(t, t.detach().clone()) for t in _state_tensors(model, opt)]
    known = {id(t) for t, _ in saved}
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            step(static_x, static_y)
    torch.cuda.current_stream().wait_stream(side)
    with torch.no_grad():
        for t, value in saved:
            t.copy_(value)
        for t in _state_tensors(model, opt):
            if id(t) not in known:
                t.zero_()
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        static_losses = step(static_x, static_y)

    def replay(xb: Tensor, yb: Tensor) -> Tensor:
        static_x.copy_(xb)
        static_y.copy_(yb)
        graph.replay()
        return static_losses.clone()

    return replay
