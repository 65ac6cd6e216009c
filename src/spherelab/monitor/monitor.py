"""RegimeMonitor: the ELR, effective gradient norm, angles and norm of the SI weights of ANY
PyTorch training loop, written as a spherelab run directory, with the live regime of a map.

Per step (``monitor.step(loss)`` after ``optimizer.step()``, or the optimizer post-hook of
``attach``) it only adds to on-device sums (spherelab.monitor.tracker); every
``record_every`` steps it reads them once and writes one metrics.jsonl row (docs/monitor.md):

* ``elr`` = lr / ||w||^2 (the run files' ELR) and ``elr_effective`` = elr / (1 - momentum),
  the steady step of heavy-ball momentum: the quantity compared with a sweep's regime map;
* ``eff_grad_norm``: mean over the steps since the last record of ||g_t|| ||w_t||;
* ``angle_step`` (mean) / ``angle_step_max``: per-step angles; ``angle``: since the last record;
* ``si_norm``; with weight decay the equilibrium predictions ``angle_equilibrium`` and
  ``elr_equilibrium`` (spherelab.metrics.geometry) and ``equilibration_steps``;
* with a sweep: ``map_regime``, the band of that sweep's regime map (the regime lens's bands,
  spherelab.studies.lens.sweep_bands) that ``elr_effective`` sits in now.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from spherelab.config import Config, OptimConfig, TrainConfig
from spherelab.io import append_jsonl, write_json
from spherelab.metrics.geometry import elr_at_norm, equilibrium_angle, equilibrium_elr
from spherelab.monitor.tracker import GroupTracker
from spherelab.regimes import label_run, regime_note
from spherelab.report.style import REGIME_NUMBERS
from spherelab.runtime import environment
from spherelab.sphere import check_scale_invariance, si_parameters
from spherelab.studies.conventional import relaxation_steps
from spherelab.studies.lens import band_of, sweep_bands
from spherelab.train.tensorboard import TENSORBOARD_DIR, ScalarLog

log = logging.getLogger("spherelab")

SIGroups = Mapping[str, Sequence[nn.Parameter]] | Sequence[nn.Parameter]
JOINT = "si"  # the name of the joint vector of all SI weights


class RegimeMonitor:
    """Watch the SI weights of `model`, trained by `optimizer` in the caller's own loop.

    `si`: the SI weights (a list) or named groups of them (a dict); default
    ``spherelab.si_parameters(model)``. `example_input`: if given, the weights are first proven
    SI on it (check_scale_invariance). `out`: the run directory to write (None: memory only).
    `sweep`: a sweep directory whose regime map labels the live ELR. `tensorboard`: also write
    records as TensorBoard scalars into OUT/tensorboard/ (or this directory)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        out: str | Path | None = None,
        *,
        steps_per_epoch: int,
        record_every: int | None = None,
        si: SIGroups | None = None,
        example_input: Tensor | None = None,
        sweep: str | Path | None = None,
        num_classes: int | None = None,
        tensorboard: bool | str | Path = False,
    ) -> None:
        if steps_per_epoch < 1 or (record_every is not None and record_every < 1):
            raise ValueError(
                f"steps_per_epoch={steps_per_epoch} and record_every={record_every} must be "
                ">= 1 (e.g. steps_per_epoch=len(train_loader))"
            )
        self.model, self.optimizer = model, optimizer
        self.steps_per_epoch = steps_per_epoch
        self.record_every = record_every or steps_per_epoch
        self.groups = _groups(model, si, example_input)
        # the joint vector of all SI weights; named groups (if several) on top of it
        every = [p for ps in self.groups.values() for p in ps]
        self.trackers = {JOINT: GroupTracker(every)}
        if len(self.groups) > 1:
            self.trackers |= {name: GroupTracker(ps) for name, ps in self.groups.items()}
        self._check(example_input)
        self.names = {id(p): n for n, p in model.named_parameters()}
        self.bands = sweep_bands(sweep)[0] if sweep is not None else None
        self.sweep, self.num_classes = sweep, num_classes
        self.out = Path(out) if out is not None else None
        self.records: list[dict[str, Any]] = []
        self.step_count = 0
        # on-device sums since the last record
        self._loss: Tensor | float | None = None
        self._acc: Tensor | float | None = None
        self._seen = self._acc_seen = 0
        self._extra: dict[str, float] = {}
        self._handle: Any = None
        self.regime = ""  # the map's band of the latest record ("" without a sweep)
        self.summary: dict[str, Any] | None = None
        self._start_files(tensorboard)

    # ---- per step -----------------------------------------------------------------------

    def observe(self, loss: Tensor | float, accuracy: Tensor | float | None = None) -> None:
        """Add one batch's training loss (and accuracy, a fraction) to the next record's means;
        tensors stay on their device."""
        loss = loss.detach().double() if isinstance(loss, Tensor) else float(loss)
        self._loss = loss if self._loss is None else self._loss + loss
        self._seen += 1
        if accuracy is not None:
            acc = accuracy.detach().double() if isinstance(accuracy, Tensor) else accuracy
            self._acc = acc if self._acc is None else self._acc + acc
            self._acc_seen += 1

    def step(
        self, loss: Tensor | float | None = None, accuracy: Tensor | float | None = None
    ) -> None:
        """Account for the optimizer step just taken; records every `record_every` steps."""
        if loss is not None:
            self.observe(loss, accuracy)
        self._after_step()

    __call__ = step

    def _after_step(self, *_: Any) -> None:
        for tracker in self.trackers.values():
            tracker.update()
        self.step_count += 1
        if self.step_count % self.record_every == 0:
            self.record()

    def attach(self) -> RegimeMonitor:
        """Run `step` as an optimizer step post-hook (pass losses with `observe`)."""
        if self._handle is None:
            self._handle = self.optimizer.register_step_post_hook(self._after_step)
        return self

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def add_metrics(self, **values: float) -> None:
        """Numbers for the next record (e.g. test_loss=..., test_acc=... of your evaluation)."""
        self._extra.update({k: float(v) for k, v in values.items()})

    # ---- records ------------------------------------------------------------------------

    def record(self) -> dict[str, Any]:
        """Read the sums (one host read per group), write one metrics.jsonl row, return it."""
        row: dict[str, Any] = {
            "epoch": self.step_count / self.steps_per_epoch,
            "step": self.step_count,
        }
        row |= self._losses()
        for name, tracker in self.trackers.items():
            values = self._group_row(tracker)
            if name == JOINT:
                row |= values
            else:
                row.setdefault("groups", {})[name] = values
        row |= self._extra
        self._extra = {}
        if self.bands is not None:
            regime = band_of(row["elr_effective"], self.bands)
            if regime != self.regime:
                log.info("step %d: effective ELR %.3g is in the map's %s band", row["step"],
                         row["elr_effective"], regime)  # fmt: skip
            self.regime = regime
            row |= {"map_regime": regime, "map_regime_number": REGIME_NUMBERS[regime]}
        self.records.append(row)
        if self.out is not None:
            append_jsonl(self.out / "metrics.jsonl", row)
        if self._tb is not None:
            self._tb.write(self.step_count, row)
        return row

    def _losses(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self._loss is not None and self._seen:
            sums = [self._loss] + ([self._acc] if self._acc is not None else [])
            device = next((v.device for v in sums if isinstance(v, Tensor)), None)
            both = [torch.as_tensor(v, dtype=torch.float64, device=device) for v in sums]
            values = torch.stack(both).tolist()  # the one host read of the losses
            out["train_loss"] = values[0] / self._seen
            if self._acc is not None:
                out["train_acc"] = values[1] / self._acc_seen
        self._loss = self._acc = None
        self._seen = self._acc_seen = 0
        return out

    def _group_row(self, tracker: GroupTracker) -> dict[str, Any]:
        got, tensor_norms = tracker.read()
        steps = max(got["steps"], 1.0)
        hyper = self._hyper(tracker.params[0])
        lr, wd, mu = hyper["lr"], hyper["weight_decay"], hyper["momentum"]
        norm, grad = got["si_norm"], got["eff_grad_norm_sum"] / steps
        elr = elr_at_norm(lr, norm)
        row: dict[str, Any] = {
            "lr": lr,
            "weight_decay": wd,
            "momentum": mu,
            "si_norm": norm,
            "elr": elr,
            "elr_effective": elr / (1.0 - mu),
            "eff_grad_norm": grad,
            "angle": got["angle"],
            "angle_to_init": got["angle_to_init"],
            "angle_step": got["angle_step_sum"] / steps,
            "angle_step_max": got["angle_step_max"],
        }
        if wd > 0 and lr > 0 and isinstance(self.optimizer, torch.optim.SGD):
            row |= {
                "angle_equilibrium": equilibrium_angle(lr, wd, mu),
                "elr_equilibrium": equilibrium_elr(lr, wd, mu, grad),
                "equilibration_steps": relaxation_steps(lr, wd, mu),
            }
        norms = dict(zip([self.names.get(id(p), "?") for p in tracker.params], tensor_norms))
        row["layer_norms"] = norms
        row["layer_elr"] = {k: elr_at_norm(lr, v) for k, v in norms.items()}
        return row

    def _hyper(self, param: nn.Parameter) -> dict[str, float]:
        """lr, weight decay and momentum of the optimizer param group that holds `param` (0 if
        the optimizer has none; Adam-type betas are not heavy-ball momentum: 0)."""
        for group in self.optimizer.param_groups:
            if any(p is param for p in group["params"]):
                return {
                    k: float(group.get(k, 0.0) or 0.0) for k in ("lr", "weight_decay", "momentum")
                }
        raise ValueError("an SI weight is in no param group of the optimizer; pass its optimizer")

    # ---- files ----------------------------------------------------------------------------

    def _check(self, example_input: Tensor | None) -> None:
        if example_input is None:
            return
        result = check_scale_invariance(
            self.model, example_input, self.trackers[JOINT].params, probe_tensors=False
        )
        if not result.ok:
            raise ValueError(f"the monitored weights are not scale-invariant: {result}")

    def _start_files(self, tensorboard: bool | str | Path) -> None:
        self._tb: ScalarLog | None = None
        if tensorboard is True:
            if self.out is None:
                raise ValueError(
                    "tensorboard=True writes into OUT/tensorboard: give out= or a directory"
                )
            self._tb = ScalarLog(self.out / TENSORBOARD_DIR)
        elif tensorboard:
            self._tb = ScalarLog(Path(tensorboard))
        if self.out is None:
            return
        if (self.out / "metrics.jsonl").exists():
            raise ValueError(
                f"{self.out} already holds a run (metrics.jsonl); choose another out directory"
            )
        write_json(self.out / "config.json", self._config())

    def _config(self) -> dict[str, Any]:
        """A conventional-mode spherelab config of what is known, plus the `monitor` table."""
        first = self.trackers[JOINT].params[0]
        hyper = self._hyper(first)
        cfg = Config(
            optim=OptimConfig(
                mode="conventional",
                lr=hyper["lr"],
                weight_decay=hyper["weight_decay"],
                momentum=hyper["momentum"],
            ),
            train=TrainConfig(records=0, checkpoints="none"),
        ).to_dict()
        cfg["model"]["name"] = "user"
        cfg["data"]["name"] = "user"
        cls = type(self.model)
        cfg["monitor"] = {
            "model_class": f"{cls.__module__}.{cls.__qualname__}",
            "optimizer": type(self.optimizer).__name__,
            "steps_per_epoch": self.steps_per_epoch,
            "record_every": self.record_every,
            "si_groups": {
                name: [self.names.get(id(p), "?") for p in ps] for name, ps in self.groups.items()
            },
            "sweep": str(self.sweep) if self.sweep is not None else None,
        }
        return cfg | {"environment": environment(first.device)}

    def close(self) -> dict[str, Any]:
        """Record the last step (if not just recorded), write summary.json, stop the hook."""
        self.detach()
        if self.step_count and (not self.records or self.records[-1]["step"] != self.step_count):
            self.record()
        if self._tb is not None:
            self._tb.close()
        if not self.records:
            raise ValueError("the monitor saw no step; call monitor.step() after optimizer.step()")
        regime, stats = label_run(self.records, "finished", self.num_classes)
        first_loss = self.records[0].get("train_loss")
        self.summary = dict(self.records[-1]) | {
            "status": "finished",
            "regime": regime,
            "regime_stats": stats,
            "regime_note": regime_note(self.records),
            "num_classes": self.num_classes,
            "init_train_loss": first_loss,
        }
        if self.out is not None:
            write_json(self.out / "summary.json", self.summary)
        return self.summary

    def __enter__(self) -> RegimeMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            self.detach()


def _groups(
    model: nn.Module, si: SIGroups | None, example: Tensor | None = None
) -> dict[str, list[nn.Parameter]]:
    if si is None:
        found = list(si_parameters(model, example))
        if not found:
            raise ValueError(
                f"spherelab.si_parameters found no scale-invariant weights in "
                f"{type(model).__name__}; pass them as si=[...] (weights followed by a norm)"
            )
        return {JOINT: found}
    if isinstance(si, Mapping):
        groups = {str(k): list(v) for k, v in si.items()}
    else:
        groups = {JOINT: list(si)}
    if not groups or any(not ps for ps in groups.values()):
        raise ValueError("si= has an empty group; pass a list of SI parameters or a dict of lists")
    if len(groups) > 1 and JOINT in groups:
        raise ValueError(f"si= names a group {JOINT!r}, the joint vector's name; rename it")
    return groups
