"""A PyTorch Lightning callback that runs a RegimeMonitor in `Trainer.fit` (extra `lightning`).

The monitor is built when training starts (the LightningModule and its first optimizer; steps per
epoch from the trainer), steps after every training batch with the loss the module returned,
and closes when training ends. Each record is also sent to the trainer's loggers under
``spherelab/``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from torch import Tensor

from spherelab.monitor.monitor import RegimeMonitor, SIGroups
from spherelab.train.tensorboard import scalars


class RegimeCallback(pl.Callback):
    """`RegimeMonitor(pl_module, optimizer, out, **monitor_kwargs)` inside `Trainer.fit`.

    `si` may be a callable of the module giving its SI weights (or groups); default: the
    module's own ``si_parameters()`` or spherelab's graph analysis."""

    def __init__(
        self, out: str | Path | None = None, si: Any = None, **monitor_kwargs: Any
    ) -> None:
        super().__init__()
        self.out, self.si, self.kwargs = out, si, monitor_kwargs
        self.monitor: RegimeMonitor | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        si: SIGroups | None = self.si(pl_module) if callable(self.si) else self.si
        if trainer.accumulate_grad_batches != 1:  # one monitor step per batch = per step
            raise ValueError(
                f"RegimeCallback needs accumulate_grad_batches=1, got "
                f"{trainer.accumulate_grad_batches}; use RegimeMonitor in a manual loop instead"
            )
        kwargs = dict(self.kwargs)
        if "steps_per_epoch" not in kwargs:
            batches = float(trainer.num_training_batches)  # inf for a loader without len()
            if not (math.isfinite(batches) and batches >= 1):
                raise ValueError(
                    "the train loader has no length: pass RegimeCallback(steps_per_epoch=N)"
                )
            kwargs["steps_per_epoch"] = int(batches)
        self.monitor = RegimeMonitor(pl_module, trainer.optimizers[0], self.out, si=si, **kwargs)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.monitor is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        before = len(self.monitor.records)
        self.monitor.step(loss if isinstance(loss, Tensor) else None)
        if len(self.monitor.records) > before:
            self._log(trainer, self.monitor.records[-1])

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.monitor is not None and self.monitor.step_count:
            self.monitor.close()

    @staticmethod
    def _log(trainer: pl.Trainer, row: Mapping[str, Any]) -> None:
        values = {f"spherelab/{k}": v for k, v in scalars(row) if k != "step"}
        for logger in trainer.loggers:
            logger.log_metrics(values, step=int(row["step"]))
