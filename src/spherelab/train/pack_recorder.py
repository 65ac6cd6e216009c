"""Evaluation records of all members at once, with the single-run keys and one host read.

Same definitions as spherelab.recorder / metrics.gradients, per member: train metrics with BN
in train mode over fixed unshuffled batches (loss, accuracy, mean effective gradient norm,
full-batch gradient, gradient SNR), test metrics in eval mode, the SI norm, the angle since the
previous record and to init. The gradient of the SUM of member losses restricted to member k's
slice is member k's own gradient, so one backward per batch serves every member.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from spherelab.ensemble.members import (
    layer_norms,
    member_angles,
    member_correct,
    member_losses,
    member_norms,
    member_sq_norms,
    shared_inputs,
)
from spherelab.metrics.state import preserved_state

Batches = list[tuple[Tensor, Tensor]]


@dataclass
class EnsembleRecorder:
    """Fixed evaluation batches and the packed reference points (init, previous record)."""

    model: nn.Module
    loss: str
    train_batches: Batches
    test_batches: Batches
    si_names: list[str]
    si_params: list[Tensor]
    init: list[Tensor] = field(default_factory=list)
    prev: list[Tensor] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.members = int(self.model.members)
        if not self.init:
            self.init = [p.detach().clone() for p in self.si_params]
        if not self.prev:
            self.prev = [p.detach().clone() for p in self.si_params]

    def record(self, step: int, epoch: float, lrs: list[float], elrs: list[float]) -> list[dict]:
        """One row per member (the keys of spherelab.recorder.Recorder.record)."""
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
        self.prev = [p.detach().clone() for p in self.si_params]
        return [
            _row(
                step,
                epoch,
                lrs[k],
                elrs[k],
                [col[k] for col in table],
                self.si_names,
                self._n_test(),
            )
            for k in range(self.members)
        ]

    def _n_test(self) -> int:
        return sum(len(y) for _, y in self.test_batches)

    def _train_stats(self) -> Tensor:
        """Rows: loss, accuracy, mean grad norm, full-grad norm, grad variance ([5, K])."""
        k = self.members
        n = sum(len(y) for _, y in self.train_batches)
        sums = torch.zeros(3, k, dtype=torch.float64, device=self.si_params[0].device)
        mean = [torch.zeros_like(p) for p in self.si_params]
        m2 = torch.zeros(k, dtype=torch.float64, device=sums.device)
        seen = 0.0
        with preserved_state(self.model, train=True), torch.enable_grad():
            for x, y in self.train_batches:
                w = len(y) / n
                logits = self.model(shared_inputs(x, k, self.model.member_layout))
                losses = member_losses(logits, y, self.loss)
                grads = torch.autograd.grad(losses.sum(), self.si_params)
                sums += torch.stack(
                    [
                        w * losses.detach(),
                        member_correct(logits, y).to(losses),
                        w * member_norms(grads, k),
                    ]
                ).double()
                seen += w  # weighted Welford, as in metrics.gradients._Welford
                delta = torch._foreach_sub(list(grads), mean)
                torch._foreach_add_(mean, delta, alpha=w / seen)
                m2 += (w * (1.0 - w / seen) * member_sq_norms(delta, k)).double()
        rho = member_norms(self.si_params, k).double()
        sums[1] /= n
        return torch.cat(
            [
                sums[:1],
                sums[1:2],
                sums[2:] * rho,
                (member_norms(mean, k).double() * rho).unsqueeze(0),
                (m2 / seen).unsqueeze(0),
                member_norms(mean, k).double().unsqueeze(0),
            ]
        )

    @torch.no_grad()
    def _test_sums(self) -> Tensor:
        """Rows: summed test loss, number correct ([2, K])."""
        k = self.members
        sums = torch.zeros(2, k, dtype=torch.float64, device=self.si_params[0].device)
        was_training = self.model.training
        self.model.eval()
        for x, y in self.test_batches:
            logits = self.model(shared_inputs(x, k, self.model.member_layout))
            sums += torch.stack(
                [member_losses(logits, y, self.loss) * len(y), member_correct(logits, y).to(logits)]
            ).double()
        self.model.train(was_training)
        return sums


def _row(
    step: int, epoch: float, lr: float, elr: float, col: list[float], names: list[str], n_test: int
) -> dict[str, Any]:
    loss, acc, eff, eff_full, var, full, test_loss, test_correct, si_norm, ang, ang0 = col[:11]
    norms = col[11:]
    return {
        "epoch": epoch,
        "step": step,
        "train_loss": loss,
        "train_acc": acc,
        "test_loss": test_loss / n_test,
        "test_acc": test_correct / n_test,
        "eff_grad_norm": eff,
        "eff_full_grad_norm": eff_full,
        "grad_snr": full**2 / var if var > 0 else math.inf,
        "si_norm": si_norm,
        "angle": ang,
        "angle_to_init": ang0,
        "lr": lr,
        "elr": elr,
        "layer_norms": dict(zip(names, norms)),
        "layer_elr": {n: lr / max(v, 1e-30) ** 2 for n, v in zip(names, norms)},
    }
