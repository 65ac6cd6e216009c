"""How the K runs of a pack share the trained module: the one place the engine knows K.

`Solo` is a pack of one: the run's own model and optimizer (any model, sphere or conventional
mode, any sphere granularity). `Packed` is K >= 1 packable runs in one ensemble module with one
SphereSGD(members=K), each member's ELR and radius a device tensor; a scratch single model
reads and writes each member's state in the single-run format, so a member's checkpoint is
exactly what its single run would save. Everything else (loop, recorder, rows, statistics,
summary, checkpoints) is the same code for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from spherelab.config import Config
from spherelab.data import Augment, augment_images
from spherelab.ensemble.members import member_inputs, shared_inputs
from spherelab.ensemble.modules import batched_names, ensemble_skeleton, pack_info
from spherelab.ensemble.pack import join_members, member_slice, pack_states, unpack_state
from spherelab.sphere import SphereSGD
from spherelab.sphere.units import measure_radius
from spherelab.train.optimizer import set_rate

StateDicts = tuple[dict[str, Any], dict[str, Any]]  # (model, optimizer) of one member


class Solo:
    """One run trained as it is: its model and make_optimizer's optimizer (the pack of one)."""

    members = 1

    def __init__(
        self,
        cfg: Config,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        augment: Augment = augment_images,
    ) -> None:
        self.cfg, self.model, self.optimizer = cfg, model, optimizer
        self.augment = augment  # (batch, generator) -> augmented batch (data.image_augment)
        self.channels_last = cfg.train.channels_last
        self.lr, self.elr = set_rate(optimizer, cfg.optim, 1.0)

    def train_inputs(self, x: Tensor) -> Tensor:
        """The whole training set in the layout the model reads (channels_last if set)."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def batch(
        self, x: Tensor, y: Tensor, idx: Sequence[Tensor], aug: Sequence[torch.Generator] | None
    ) -> tuple[Tensor, Tensor]:
        xb = x[idx[0]]
        return (self.augment(xb, aug[0]) if aug else xb), y[idx[0]]

    def eval_inputs(self, x: Tensor) -> Tensor:
        return self.train_inputs(x)

    def logits(self, out: Tensor) -> Tensor:
        return out.unsqueeze(0)

    def set_factor(self, factor: float) -> None:
        self.lr, self.elr = set_rate(self.optimizer, self.cfg.optim, factor)

    def rates(self) -> tuple[list[float], list[float]]:
        """(lr applied to the SI tensors, ELR) per member at the current factor."""
        return [self.lr], [self.elr]

    def freeze(self, k: int) -> None:
        """Nothing to do: with its only member finished, the loop stops."""

    def member_state(self, k: int) -> StateDicts:
        return self.model.state_dict(), self.optimizer.state_dict()

    def load_members(self, states: Sequence[StateDicts]) -> None:
        self.model.load_state_dict(states[0][0])
        self.optimizer.load_state_dict(states[0][1])

    def member_module(self, k: int) -> tuple[nn.Module, torch.optim.Optimizer]:
        return self.model, self.optimizer

    def member_tensors(self, packed: Sequence[Tensor], k: int) -> list[Tensor]:
        """Member k's parts of tensors shaped like the SI tensors (views)."""
        return list(packed)

    def join(self, per_member: Sequence[Sequence[Tensor]]) -> list[Tensor]:
        """The inverse of member_tensors: one list of tensors per member -> packed tensors."""
        return list(per_member[0])


class Packed:
    """K packable runs in one ensemble module (see spherelab.ensemble) with SphereSGD(members=K).

    `scratch` is member 0's single model and optimizer, built exactly as a single run builds
    them; it converts member states between the packed and the single-run formats."""

    def __init__(
        self,
        cfgs: Sequence[Config],
        models: Sequence[nn.Module],
        scratch_opt: torch.optim.Optimizer,
        si_names: Sequence[str],
        layout: str | None,
        augment: Augment = augment_images,
    ) -> None:
        first = models[0]
        self.augment = augment
        self.cfgs, self.members = list(cfgs), len(models)
        self.scratch, self.scratch_opt = first, scratch_opt
        p0 = next(first.parameters())
        self.model = ensemble_skeleton(first, self.members, layout).to(p0.device, p0.dtype)
        self.layout = pack_info(self.model)[1]
        self.batched = batched_names(self.model)
        pack_states(self.model, [m.state_dict() for m in models], self.batched)
        packed = dict(self.model.named_parameters())
        self.si = [packed[n] for n in si_names]
        self.si_batched = [n in self.batched for n in si_names]
        self.radii = [_global_radius(m, si_names) for m in models]
        self.base_elr = torch.tensor([c.optim.elr for c in cfgs], dtype=p0.dtype, device=p0.device)
        self.elr = self.base_elr.clone()
        self.optimizer = SphereSGD(
            self.si,
            elr=[c.optim.elr for c in cfgs],
            momentum=cfgs[0].optim.momentum,
            momentum_style=cfgs[0].optim.momentum_style,
            weight_decay=cfgs[0].optim.sphere_weight_decay,
            sphere="global",
            radius=self.radii,
            members=self.members,
        )
        # device tensors: no host-to-device copy per step, and CUDA graphs see in-place updates
        radius = torch.tensor(self.radii, dtype=p0.dtype, device=p0.device)
        self.optimizer.param_groups[0].update(elr=self.elr, radius=radius)
        self.factor = 1.0

    def train_inputs(self, x: Tensor) -> Tensor:
        return x

    def batch(
        self, x: Tensor, y: Tensor, idx: Sequence[Tensor], aug: Sequence[torch.Generator] | None
    ) -> tuple[Tensor, Tensor]:
        """Member batches in the module's input layout ([B, K*C, ...] or [K, F, B]), labels
        [K, B]."""
        index = torch.stack(list(idx))  # [K, B]
        xb = x.index_select(0, index.view(-1)).view(*index.shape, *x.shape[1:])
        if aug:
            xb = torch.stack([self.augment(xb[k], g) for k, g in enumerate(aug)])
        return member_inputs(xb, self.layout), y.index_select(0, index.view(-1)).view(index.shape)

    def eval_inputs(self, x: Tensor) -> Tensor:
        return shared_inputs(x, self.members, self.layout)

    def logits(self, out: Tensor) -> Tensor:
        return out

    def set_factor(self, factor: float) -> None:
        """Every member's ELR under the schedule factor, in place on the device."""
        self.factor = factor
        torch.mul(self.base_elr, factor, out=self.elr)

    def rates(self) -> tuple[list[float], list[float]]:
        elrs = [c.optim.elr * self.factor for c in self.cfgs]
        return [e * r**2 for e, r in zip(elrs, self.radii)], elrs

    def freeze(self, k: int) -> None:
        """Member k takes no more steps (ELR 0) while the others go on."""
        self.base_elr[k] = 0.0
        self.set_factor(self.factor)

    def member_state(self, k: int) -> StateDicts:
        """Member k's model and optimizer state dicts, as its single run would hold them."""
        model, opt = self.member_module(k)
        return model.state_dict(), opt.state_dict()

    def member_module(self, k: int) -> tuple[nn.Module, torch.optim.Optimizer]:
        """The scratch single model and optimizer, loaded with member k's state."""
        self.scratch.load_state_dict(unpack_state(self.model, k, self.batched))
        opt = self.scratch_opt
        # the member's rate now, as its single run holds it (diagnostics step with it)
        opt.param_groups[0].update(radius=self.radii[k], elr=self.cfgs[k].optim.elr * self.factor)
        for p, q, batched in zip(opt.param_groups[0]["params"], self.si, self.si_batched):
            buf = self.optimizer.state.get(q, {}).get("momentum_buffer")
            if buf is not None:
                opt.state[p]["momentum_buffer"] = member_slice(
                    buf, k, self.members, batched
                ).clone()
        return self.scratch, opt

    def member_tensors(self, packed: Sequence[Tensor], k: int) -> list[Tensor]:
        """Member k's parts of tensors shaped like the SI tensors (views)."""
        return [member_slice(t, k, self.members, b) for t, b in zip(packed, self.si_batched)]

    def join(self, per_member: Sequence[Sequence[Tensor]]) -> list[Tensor]:
        """The inverse of member_tensors: one list of tensors per member -> packed tensors."""
        return [join_members(list(ts), b) for ts, b in zip(zip(*per_member), self.si_batched)]

    def load_members(self, states: Sequence[StateDicts]) -> None:
        """Pack K members' single-run states (model, optimizer) into the module and SphereSGD."""
        pack_states(self.model, [m for m, _ in states], self.batched)
        self.radii = [float(o["param_groups"][0]["radius"]) for _, o in states]
        self.optimizer.param_groups[0]["radius"].copy_(
            torch.tensor(self.radii, dtype=torch.float64)
        )
        for i, (q, batched) in enumerate(zip(self.si, self.si_batched)):
            bufs = [o["state"].get(i, {}).get("momentum_buffer") for _, o in states]
            if bufs[0] is not None:
                buf = join_members([b.to(q) for b in bufs], batched)
                self.optimizer.state[q]["momentum_buffer"] = buf


def _global_radius(model: nn.Module, si_names: Sequence[str]) -> float:
    """The radius SphereSGD measures for the model's SI tensors on one global sphere."""
    params = dict(model.named_parameters())
    return float(measure_radius([params[n].detach() for n in si_names], 1, "global"))  # type: ignore[arg-type]
