"""One evaluation record of a run (a row of metrics.jsonl), computed with one host read per part.

Train metrics follow the paper: BN in train mode over fixed, unshuffled batches (loss, accuracy
and the mean effective gradient norm in one pass, running statistics left untouched); test
metrics use BN in eval mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from spherelab.metrics.geometry import angle_tensor, joint_norm
from spherelab.metrics.gradients import gradient_stats
from spherelab.train.losses import LossFn, batch_sums


@dataclass
class Recorder:
    """Holds the fixed evaluation batches and the reference points for angles."""

    model: nn.Module
    loss_fn: LossFn
    train_batches: list[tuple[Tensor, Tensor]]
    test_batches: list[tuple[Tensor, Tensor]]
    si_names: list[str]
    si_params: list[Tensor]
    init: list[Tensor] = field(default_factory=list)
    prev: list[Tensor] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.init:
            self.init = [p.detach().clone() for p in self.si_params]
        if not self.prev:
            self.prev = [p.detach().clone() for p in self.si_params]

    def record(self, step: int, epoch: float, lr: float, elr: float) -> dict[str, Any]:
        """Evaluate now. `lr` is the step size actually applied, `elr` the effective one."""
        stats = gradient_stats(self.model, self.loss_fn, self.train_batches, self.si_params)
        test_loss, test_acc = self._test_metrics()
        norms = torch.stack(torch._foreach_norm([p.detach() for p in self.si_params]))
        si_norm = joint_norm(self.si_params)
        geo = torch.stack(
            [
                si_norm,
                angle_tensor(self.si_params, self.prev),
                angle_tensor(self.si_params, self.init),
            ]
        ).tolist()
        layer_norms = norms.tolist()
        self.prev = [p.detach().clone() for p in self.si_params]
        return {
            "epoch": epoch,
            "step": step,
            "train_loss": stats.loss,
            "train_acc": stats.accuracy,
            "test_loss": test_loss,
            "test_acc": test_acc,
            "eff_grad_norm": stats.eff_grad_norm,
            "eff_full_grad_norm": stats.eff_full_grad_norm,
            "grad_snr": stats.snr,
            "si_norm": geo[0],
            "angle": geo[1],
            "angle_to_init": geo[2],
            "lr": lr,
            "elr": elr,
            "layer_norms": dict(zip(self.si_names, layer_norms)),
            "layer_elr": {n: lr / max(v, 1e-30) ** 2 for n, v in zip(self.si_names, layer_norms)},
        }

    @torch.no_grad()
    def _test_metrics(self) -> tuple[float, float]:
        was_training = self.model.training
        self.model.eval()
        loss_sum = torch.zeros((), dtype=torch.float64)
        correct = torch.zeros((), dtype=torch.float64)
        n = 0
        for x, y in self.test_batches:
            s, c = batch_sums(self.model, self.loss_fn, x, y)
            loss_sum = loss_sum.to(s.device) + s.double()
            correct = correct.to(s.device) + c.double()
            n += len(y)
        self.model.train(was_training)
        loss, acc = torch.stack([loss_sum, correct]).tolist()
        return loss / n, acc / n

    def state(self) -> dict[str, Sequence[Tensor]]:
        return {"init": self.init, "prev": self.prev}
