"""Evaluation records (rows of metrics.jsonl) of every member of a pack, with one host read.

Train metrics follow the paper: BN in train mode over fixed, unshuffled batches (loss,
accuracy, gradient statistics in one pass, running statistics left untouched); test metrics use
BN in eval mode. The gradient of the SUM of member losses restricted to member k's slice is
member k's own gradient, so one backward per batch serves every member (a single run is the
pack of one).

`Recorder.measure` is the one place a per-member metric is defined, and `metric_row` the one
place a row is built (docs/extending.md shows how to add a metric).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from spherelab.metrics.geometry import elr_at_norm
from spherelab.metrics.packed import Welford, layer_norms, member_angles, member_norms
from spherelab.metrics.state import preserved_state
from spherelab.train.losses import member_correct, member_losses

Batches = list[tuple[Tensor, Tensor]]

# The keys every row has (docs/run_files.md#metricsjsonl lists all of them, with units).
METRIC_KEYS = (
    "epoch",
    "step",
    "train_loss",
    "train_acc",
    "test_loss",
    "test_acc",
    "eff_grad_norm",
    "si_norm",
    "angle",
    "lr",
    "elr",
)


class Inputs(Protocol):
    """What the recorder needs of a pack's sharing (train.sharing.Solo / Packed)."""

    members: int

    def eval_inputs(self, x: Tensor) -> Tensor: ...

    def logits(self, out: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class TrainPass:
    """Per-member sums of one pass over the fixed training batches ([K] float64 tensors)."""

    loss: Tensor  # mean loss over the training set
    correct: Tensor  # number of correct predictions
    grad_norm: Tensor  # mean over batches (weighted by size) of the batch-gradient norm
    grad_norm_plain: Tensor  # plain mean over batches of the batch-gradient norm (the paper's)
    full_grad_norm: Tensor  # norm of the full-batch gradient (the weighted mean gradient)
    grad_variance: Tensor  # weighted variance of the batch gradients around it
    n: int  # training samples


@dataclass(frozen=True)
class TestPass:
    """Per-member sums of one pass without gradients over fixed batches ([K] float64 tensors)."""

    loss_sum: Tensor
    correct: Tensor
    n: int


@dataclass
class Recorder:
    """Fixed evaluation batches and the packed reference points (init, previous record)."""

    model: nn.Module
    share: Inputs
    loss: str
    train_batches: Batches
    test_batches: Batches
    si_names: list[str]
    si_params: list[Tensor]
    init: list[Tensor] = field(default_factory=list)
    prev: list[Tensor] = field(default_factory=list)
    # training subsets measured apart, by name (e.g. the noisy and the clean labels)
    subsets: dict[str, Batches] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.members = self.share.members
        # every parameter (SI or not, trainable or not) where the model starts: built before a
        # resume loads its checkpoint, so this is always the run's start
        self.init_all = [p.detach().clone() for p in self.model.parameters()]
        if not self.init:
            self.init = [p.detach().clone() for p in self.si_params]
        if not self.prev:
            self.prev = [p.detach().clone() for p in self.si_params]

    def measure(self) -> dict[str, Tensor]:
        """Every per-member metric of a record, by name: [K] tensors on the device. Their
        names are the row's keys, in this order, between ``step`` and ``lr``."""
        k = self.members
        train, test = self.train_pass(), self.test_pass()
        rho = member_norms(self.si_params, k).double()  # on the global sphere: the radius
        params = [p.detach() for p in self.model.parameters()]
        metrics = {
            "train_loss": train.loss,
            "train_acc": train.correct / train.n,
            "test_loss": test.loss_sum / test.n,
            "test_acc": test.correct / test.n,
            "eff_grad_norm": train.grad_norm * rho,
            "eff_grad_norm_plain": train.grad_norm_plain * rho,
            "eff_full_grad_norm": train.full_grad_norm * rho,
            "grad_snr": _snr(train.full_grad_norm, train.grad_variance),
            "si_norm": rho,
            "angle": member_angles(self.si_params, self.prev, k),
            "angle_to_init": member_angles(self.si_params, self.init, k),
            "l2_to_init": member_norms(torch._foreach_sub(params, self.init_all), k).double(),
        }
        for name, batches in self.subsets.items():
            part = self.eval_pass(batches, train=True)
            metrics[f"train_loss_{name}"] = part.loss_sum / part.n
            metrics[f"train_acc_{name}"] = part.correct / part.n
        return metrics

    def record(
        self,
        step: int,
        epoch: float,
        rates: tuple[Sequence[float], Sequence[float]],
        only: Sequence[int],
        measured_elr: bool = False,
    ) -> list[dict[str, Any]]:
        """Rows of members `only` now; their `prev` moves to here. `rates` = (lr, ELR) per
        member; `measured_elr` reports lr / ||w||^2 as the ELR (conventional training)."""
        metrics = self.measure()
        per_layer = layer_norms(self.si_params, self.members).double()
        table = torch.cat([torch.stack([v.double() for v in metrics.values()]), per_layer])
        columns = table.T.tolist()  # the one host read
        self._move_prev(only)
        lrs, elrs = rates
        rows = []
        for k in only:
            values = dict(zip(metrics, columns[k]))
            norms = dict(zip(self.si_names, columns[k][len(metrics) :]))
            elr = elr_at_norm(lrs[k], values["si_norm"]) if measured_elr else elrs[k]
            rows.append(metric_row(step, epoch, values, lrs[k], elr, norms))
        return rows

    def _move_prev(self, only: Sequence[int]) -> None:
        if len(only) == self.members:
            self.prev = [p.detach().clone() for p in self.si_params]
            return
        for prev, p in zip(self.prev, self.si_params):  # the others keep their last record's point
            view_prev, view_p = prev.view(self.members, -1), p.detach().reshape(self.members, -1)
            for k in only:
                view_prev[k].copy_(view_p[k])

    def train_pass(self) -> TrainPass:
        """Loss, accuracy and gradient statistics over the fixed training batches, BN in train
        mode (running statistics restored); a weighted Welford pass over the batch gradients."""
        k = self.members
        n = sum(len(y) for _, y in self.train_batches)
        sums = torch.zeros(4, k, dtype=torch.float64, device=self.si_params[0].device)
        welford = Welford(self.si_params, k)
        with preserved_state(self.model, train=True), torch.enable_grad():
            for x, y in self.train_batches:
                w = len(y) / n
                logits = self.share.logits(self.model(self.share.eval_inputs(x)))
                losses = member_losses(logits, y, self.loss)
                grads = torch.autograd.grad(losses.sum(), self.si_params)
                norms = member_norms(grads, k)
                sums += torch.stack(
                    [
                        w * losses.detach(),
                        member_correct(logits, y).to(losses),
                        w * norms,
                        norms / len(self.train_batches),
                    ]
                ).double()
                welford.add(grads, w)
        full = member_norms(welford.mean, k).double()
        return TrainPass(sums[0], sums[1], sums[2], sums[3], full, welford.variance(), n)

    def test_pass(self) -> TestPass:
        """Summed loss and number correct over the fixed test batches, BN in eval mode."""
        return self.eval_pass(self.test_batches, train=False)

    @torch.no_grad()
    def eval_pass(self, batches: Batches, train: bool) -> TestPass:
        """Summed loss and number correct over `batches` without gradients, BN in train mode
        (batch statistics) or eval mode (running statistics); buffers and modes restored."""
        sums = torch.zeros(2, self.members, dtype=torch.float64, device=self.si_params[0].device)
        with preserved_state(self.model, train=train):
            for x, y in batches:
                logits = self.share.logits(self.model(self.share.eval_inputs(x)))
                losses = member_losses(logits, y, self.loss) * len(y)
                sums += torch.stack([losses, member_correct(logits, y).to(logits)]).double()
        return TestPass(sums[0], sums[1], sum(len(y) for _, y in batches))


def metric_row(
    step: int,
    epoch: float,
    values: dict[str, float],
    lr: float,
    elr: float,
    layer_norms: dict[str, float],
) -> dict[str, Any]:
    """One metrics.jsonl row: epoch, step, the measured metrics, the rates, per-layer norms
    and ELRs (docs/run_files.md#metricsjsonl)."""
    return {
        "epoch": epoch,
        "step": step,
        **values,
        "lr": lr,
        "elr": elr,
        "layer_norms": layer_norms,
        "layer_elr": {name: elr_at_norm(lr, v) for name, v in layer_norms.items()},
    }


def _snr(full: Tensor, variance: Tensor) -> Tensor:
    """Squared norm of the mean gradient over the variance of the batch gradients (inf when
    the batches agree exactly)."""
    return torch.where(variance > 0, full.square() / variance, math.inf)
