"""Evaluation records (rows of metrics.jsonl) of every member of a pack, with one host read.

Train metrics follow the paper: BN in train mode over fixed, unshuffled batches (loss,
accuracy, mean effective gradient norm, full-batch gradient and gradient SNR in one pass,
running statistics left untouched); test metrics use BN in eval mode. Then the SI norm, the
angle since the previous record and the angle to init. The gradient of the SUM of member
losses restricted to member k's slice is member k's own gradient, so one backward per batch
serves every member (a single run is the pack of one).

`METRIC_KEYS` and `metric_row` define the row; nothing else builds one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from spherelab.ensemble.members import (
    layer_norms,
    member_angles,
    member_norms,
    member_sq_norms,
)
from spherelab.metrics.geometry import elr_at_norm
from spherelab.metrics.state import preserved_state
from spherelab.train.losses import member_correct, member_losses

Batches = list[tuple[Tensor, Tensor]]

# The keys of every metrics.jsonl row, in order (units: nats, fractions, radians).
METRIC_KEYS = (
    "epoch",
    "step",
    "train_loss",
    "train_acc",
    "test_loss",
    "test_acc",
    "eff_grad_norm",
    "eff_full_grad_norm",
    "grad_snr",
    "si_norm",
    "angle",
    "angle_to_init",
    "lr",
    "elr",
    "layer_norms",
    "layer_elr",
)


class Inputs(Protocol):
    """What the recorder needs of a pack's sharing (train.sharing.Solo / Packed)."""

    members: int

    def eval_inputs(self, x: Tensor) -> Tensor: ...

    def logits(self, out: Tensor) -> Tensor: ...


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

    def __post_init__(self) -> None:
        self.members = self.share.members
        if not self.init:
            self.init = [p.detach().clone() for p in self.si_params]
        if not self.prev:
            self.prev = [p.detach().clone() for p in self.si_params]

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
        train = self._train_stats()
        test = self._test_sums()
        si_norm = member_norms(self.si_params, self.members)
        geo = torch.stack(
            [
                si_norm,
                member_angles(self.si_params, self.prev, self.members),
                member_angles(self.si_params, self.init, self.members),
            ]
        )
        per_layer = layer_norms(self.si_params, self.members)
        table = torch.cat([train, test, geo.to(train), per_layer.to(train)]).tolist()  # 1 read
        self._move_prev(only)
        n_test = sum(len(y) for _, y in self.test_batches)
        lrs, elrs = rates
        rows = []
        for k in only:
            col = [c[k] for c in table]
            elr = elr_at_norm(lrs[k], col[8]) if measured_elr else elrs[k]
            rows.append(metric_row(step, epoch, lrs[k], elr, col, self.si_names, n_test))
        return rows

    def _move_prev(self, only: Sequence[int]) -> None:
        if len(only) == self.members:
            self.prev = [p.detach().clone() for p in self.si_params]
            return
        for prev, p in zip(self.prev, self.si_params):  # the others keep their last record's point
            view_prev, view_p = prev.view(self.members, -1), p.detach().reshape(self.members, -1)
            for k in only:
                view_prev[k].copy_(view_p[k])

    def _train_stats(self) -> Tensor:
        """Rows: loss, accuracy, mean eff. grad norm, eff. full-grad norm, grad variance,
        full-grad norm ([6, K])."""
        k = self.members
        n = sum(len(y) for _, y in self.train_batches)
        sums = torch.zeros(3, k, dtype=torch.float64, device=self.si_params[0].device)
        mean = [torch.zeros_like(p) for p in self.si_params]
        m2 = torch.zeros(k, dtype=torch.float64, device=sums.device)
        seen = 0.0
        with preserved_state(self.model, train=True), torch.enable_grad():
            for x, y in self.train_batches:
                w = len(y) / n
                logits = self.share.logits(self.model(self.share.eval_inputs(x)))
                losses = member_losses(logits, y, self.loss)
                grads = torch.autograd.grad(losses.sum(), self.si_params)
                sums += torch.stack(
                    [
                        w * losses.detach(),
                        member_correct(logits, y).to(losses),
                        w * member_norms(grads, k),
                    ]
                ).double()
                seen += w  # weighted Welford over batches
                delta = torch._foreach_sub(list(grads), mean)
                torch._foreach_add_(mean, delta, alpha=w / seen)
                m2 += (w * (1.0 - w / seen) * member_sq_norms(delta, k)).double()
        rho = member_norms(self.si_params, k).double()
        sums[1] /= n
        full = member_norms(mean, k).double()
        return torch.cat(
            [
                sums[:1],
                sums[1:2],
                sums[2:] * rho,
                (full * rho).unsqueeze(0),
                (m2 / seen).unsqueeze(0),
                full.unsqueeze(0),
            ]
        )

    @torch.no_grad()
    def _test_sums(self) -> Tensor:
        """Rows: summed test loss, number correct ([2, K])."""
        sums = torch.zeros(2, self.members, dtype=torch.float64, device=self.si_params[0].device)
        was_training = self.model.training
        self.model.eval()  # eval mode reads the running statistics and never writes them
        for x, y in self.test_batches:
            logits = self.share.logits(self.model(self.share.eval_inputs(x)))
            sums += torch.stack(
                [
                    member_losses(logits, y, self.loss) * len(y),
                    member_correct(logits, y).to(logits),
                ]
            ).double()
        self.model.train(was_training)
        return sums


def metric_row(
    step: int,
    epoch: float,
    lr: float,
    elr: float,
    col: Sequence[float],
    names: Sequence[str],
    n_test: int,
) -> dict[str, Any]:
    """One metrics.jsonl row (METRIC_KEYS) from a member's column of the recorder's table."""
    loss, acc, eff, eff_full, var, full, test_loss, test_correct, si_norm, ang, ang0 = col[:11]
    norms = col[11:]
    values = (
        epoch,
        step,
        loss,
        acc,
        test_loss / n_test,
        test_correct / n_test,
        eff,
        eff_full,
        full**2 / var if var > 0 else math.inf,
        si_norm,
        ang,
        ang0,
        lr,
        elr,
        dict(zip(names, norms)),
        {n: elr_at_norm(lr, v) for n, v in zip(names, norms)},
    )
    return dict(zip(METRIC_KEYS, values))
