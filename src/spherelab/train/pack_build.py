"""Build an ensemble: K single runs (seeded exactly as the single-run engine seeds them), packed
into one module with one SphereSGD(members=K); save and restore members as single runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import Tensor, nn

from spherelab.config import Config
from spherelab.data.batching import BatchSampler
from spherelab.ensemble.modules import batched_names, ensemble_skeleton
from spherelab.ensemble.pack import join_members, member_slice, pack_states, unpack_state
from spherelab.sphere.check import si_parameters
from spherelab.sphere.optim import SphereSGD
from spherelab.train import checkpoints as ckpt
from spherelab.train import engine
from spherelab.train import run_files as runfiles
from spherelab.train.optimizer import make_optimizer
from spherelab.train.pack_recorder import EnsembleRecorder


@dataclass
class Ensemble:
    """K members: `runs[k]` holds member k's config, sampler, augmentation generator and
    remaining batches (its model/optimizer are a shared scratch single model used to read and
    write member checkpoints); `model`/`optimizer` are the packed module and SphereSGD."""

    runs: list[engine.Run]
    outs: list[Path]
    model: nn.Module
    optimizer: SphereSGD
    si: list[Tensor]
    batched: set[str]
    recorder: EnsembleRecorder
    radii: list[float]
    elr: Tensor  # [K] on the device: the ELR applied to each member (0 once frozen)
    base_elr: Tensor  # [K] on the device: the configured ELRs (0 once frozen)
    active: list[bool]
    total_steps: int

    @property
    def members(self) -> int:
        return len(self.runs)


def _member_run(cfg: Config, data, device: torch.device, dtype: torch.dtype) -> engine.Run:
    torch.manual_seed(cfg.train.seed)
    model = engine.build_model_for(cfg, data).to(device=device, dtype=dtype)
    if cfg.train.init_from:  # a fine-tune branch: every member starts from the checkpoint
        engine.load_weights(model, cfg.train.init_from, device)
    opt = make_optimizer(cfg.optim, model, si_parameters(model))
    sampler = BatchSampler(
        data.n_train,
        cfg.data.batch_size,
        torch.Generator().manual_seed(cfg.train.seed + 1),
        device=device,
    )
    total = (
        int(cfg.train.steps)
        if cfg.train.steps is not None
        else int(cfg.train.epochs) * sampler.steps_per_epoch
    )
    if total < 1:
        raise ValueError(
            f"train.epochs={cfg.train.epochs} / train.steps={cfg.train.steps} give "
            "no steps; set --epochs >= 1"
        )
    aug = (
        torch.Generator(device=device).manual_seed(cfg.train.seed + 2) if cfg.data.augment else None
    )
    return engine.Run(
        cfg, device, model, data, opt, sampler, SimpleNamespace(init=[], prev=[]), total, aug
    )


def build_ensemble(
    cfgs: Sequence[Config], outs: Sequence[Path], shared_batches: bool, layout: str | None = None
) -> Ensemble:
    """Data once, K members initialised as single runs, packed into one module (activation
    `layout`: see modules.ensemble_skeleton)."""
    cfg = cfgs[0]
    device, dtype, data = engine.load_run_data(cfg)
    runs = [_member_run(c, data, device, dtype) for c in cfgs]
    states = [{k: v.detach().clone() for k, v in r.model.state_dict().items()} for r in runs]
    radii = [float(r.optimizer.param_groups[0]["radius"]) for r in runs]
    scratch = runs[0]
    for run in runs:  # one scratch single model reads/writes every member's checkpoints
        run.model, run.optimizer = scratch.model, scratch.optimizer
        if shared_batches:
            run.sampler, run.remaining = scratch.sampler, scratch.remaining
    model = ensemble_skeleton(scratch.model, len(runs), layout).to(device=device, dtype=dtype)
    batched = batched_names(model)
    pack_states(model, states, batched)
    names = {id(p): n for n, p in scratch.model.named_parameters()}
    si_names = [names[id(p)] for p in si_parameters(scratch.model)]
    packed = dict(model.named_parameters())
    si = [packed[n] for n in si_names]
    opt = SphereSGD(
        si,
        elr=[c.optim.elr for c in cfgs],
        momentum=cfg.optim.momentum,
        sphere="global",
        radius=radii,
        members=len(runs),
    )
    elr = torch.tensor([c.optim.elr for c in cfgs], dtype=dtype, device=device)
    # device tensors: no host-to-device copy per step, and CUDA graphs see in-place updates
    opt.param_groups[0].update(elr=elr, radius=torch.tensor(radii, dtype=dtype, device=device))
    recorder = EnsembleRecorder(
        model,
        cfg.train.loss,
        engine.eval_batches(data.x_train, data.y_train, cfg),
        engine.eval_batches(data.x_test, data.y_test, cfg),
        si_names,
        si,
    )
    return Ensemble(
        runs,
        list(outs),
        model,
        opt,
        si,
        batched,
        recorder,
        radii,
        elr,
        elr.clone(),
        [True] * len(runs),
        scratch.total_steps,
    )


def _scratch_si(ens: Ensemble) -> list[Tensor]:
    return list(ens.runs[0].optimizer.param_groups[0]["params"])


def save_members(ens: Ensemble, step: int, only: Sequence[int]) -> None:
    """Each member's checkpoint, unpacked: exactly what a single run of it would save."""
    cfg = ens.runs[0].cfg
    if cfg.train.checkpoints == "none" or (
        cfg.train.checkpoints == "last" and step != ens.total_steps
    ):
        return
    k_all, scratch_si = ens.members, _scratch_si(ens)
    names = ens.recorder.si_names
    for k in only:
        run = ens.runs[k]
        run.model.load_state_dict(unpack_state(ens.model, k, ens.batched))
        run.optimizer.param_groups[0].update(radius=ens.radii[k], elr=run.cfg.optim.elr)
        for p, q, name in zip(scratch_si, ens.si, names):
            buf = ens.optimizer.state.get(q, {}).get("momentum_buffer")
            if buf is not None:
                run.optimizer.state[p]["momentum_buffer"] = member_slice(
                    buf, k, k_all, name in ens.batched
                ).clone()
        run.recorder.prev = [
            member_slice(t, k, k_all, n in ens.batched).clone()
            for t, n in zip(ens.recorder.prev, names)
        ]
        runfiles.save(run, ens.outs[k], step, run.remaining)


def member_init(ens: Ensemble, k: int) -> list[Tensor]:
    names = ens.recorder.si_names
    return [
        member_slice(t, k, ens.members, n in ens.batched) for t, n in zip(ens.recorder.init, names)
    ]


def _common_step(outs: Sequence[Path]) -> int:
    steps = [{ckpt.checkpoint_step(p) for p in ckpt.list_checkpoints(o)} for o in outs]
    common = set.intersection(*steps) if steps else set()
    if not common:
        return 0
    latest = max(common)
    for out in outs:  # newer files are from a save round that was cut short: redo it
        for path in ckpt.list_checkpoints(out):
            if ckpt.checkpoint_step(path) > latest:
                path.unlink()
    return latest


def restore_members(ens: Ensemble) -> tuple[list[list[dict]], int]:
    """Resume every member from its latest checkpoint common to all; (records, step)."""
    if _common_step(ens.outs) == 0:
        return [[] for _ in ens.runs], 0
    states, bufs, inits, prevs, records, step = [], [], [], [], [], 0
    for k, run in enumerate(ens.runs):
        rows, step = runfiles.restore(run, ens.outs[k])
        records.append(rows)
        states.append({n: v.detach().clone() for n, v in run.model.state_dict().items()})
        ens.radii[k] = float(run.optimizer.param_groups[0]["radius"])
        bufs.append(
            [run.optimizer.state.get(p, {}).get("momentum_buffer") for p in _scratch_si(ens)]
        )
        inits.append(run.recorder.init)
        prevs.append(run.recorder.prev)
    if ens.runs[0].sampler is ens.runs[-1].sampler:  # shared batch order: one deque
        for run in ens.runs:
            run.remaining = ens.runs[0].remaining
    _load_packed(ens, states, bufs, inits, prevs)
    return records, step


def _load_packed(ens: Ensemble, states, bufs, inits, prevs) -> None:
    pack_states(ens.model, states, ens.batched)
    names = ens.recorder.si_names
    group = ens.optimizer.param_groups[0]
    group["radius"].copy_(torch.tensor(ens.radii, dtype=torch.float64))
    for i, (q, name) in enumerate(zip(ens.si, names)):
        batched = name in ens.batched
        if bufs[0][i] is not None:
            ens.optimizer.state[q]["momentum_buffer"] = join_members([b[i] for b in bufs], batched)
        ens.recorder.init[i] = join_members([t[i] for t in inits], batched)
        ens.recorder.prev[i] = join_members([t[i] for t in prevs], batched)


def fresh_members(ens: Ensemble) -> None:
    """A run from step 0: drop old records, save each member's init."""
    for k, out in enumerate(ens.outs):
        (out / "metrics.jsonl").unlink(missing_ok=True)
        ckpt.save_init(out, member_init(ens, k))
