"""Build a pack of K runs from their configs (a single run is the pack of one): the data once,
each member seeded and initialised exactly as its single run, the shared module and optimizer
(train.sharing), and the recorder.

`Run` is one member seen as a single run (its model, optimizer, sampler, SI tensors): what the
landscape diagnostics read, offline from checkpoints or online from a hook.
"""

from __future__ import annotations

import pickle
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from spherelab.config import Config
from spherelab.data import BatchSampler, Dataset, fixed_batches, image_augment, load_dataset
from spherelab.ensemble.pack import can_pack, pack_key
from spherelab.models import build_from_config
from spherelab.runtime import resolve_device, resolve_dtype
from spherelab.sphere import si_parameters
from spherelab.train import checkpoints as ckpt
from spherelab.train.optimizer import make_optimizer
from spherelab.train.recorder import Recorder
from spherelab.train.sharing import Packed, Solo


@dataclass
class Member:
    """What each run of a pack owns besides the shared module: its config, directory, batch
    order, augmentation generator, records and (once finished) its summary."""

    cfg: Config
    out: Path
    sampler: BatchSampler
    aug_gen: torch.Generator | None
    remaining: deque[Tensor] = field(default_factory=deque)  # batches left in this epoch
    records: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None

    @property
    def active(self) -> bool:
        return self.summary is None


@dataclass
class Pack:
    """K runs trained as one module; `share` is the only part that depends on K."""

    members: list[Member]
    share: Solo | Packed
    data: Dataset
    device: torch.device
    recorder: Recorder
    total_steps: int

    @property
    def cfg(self) -> Config:
        """The settings all members share (everything but ELR and seed)."""
        return self.members[0].cfg

    @property
    def steps_per_epoch(self) -> int:
        return self.members[0].sampler.steps_per_epoch

    def member_run(self, k: int) -> Run:
        """Member k as a single run (for the Packed share: a scratch model loaded with it)."""
        model, optimizer = self.share.member_module(k)
        names = dict(model.named_parameters())
        si: list[Tensor] = [names[n] for n in self.recorder.si_names]
        init = [t.clone() for t in self.share.member_tensors(self.recorder.init, k)]
        return Run(
            self.members[k].cfg, self.device, model, self.data, optimizer,
            self.members[k].sampler, self.recorder.si_names, si, init,
            self.recorder.train_batches, self.recorder.test_batches,
        )  # fmt: skip


@dataclass
class Run:
    """One run's objects, as the landscape diagnostics read them."""

    cfg: Config
    device: torch.device
    model: nn.Module
    data: Dataset
    optimizer: torch.optim.Optimizer
    sampler: BatchSampler
    si_names: list[str]
    si_params: list[Tensor]
    init: list[Tensor]
    train_batches: list[tuple[Tensor, Tensor]]
    test_batches: list[tuple[Tensor, Tensor]]


def load_run_data(cfg: Config) -> tuple[torch.device, torch.dtype, Dataset]:
    """The device, dtype and in-memory data set of a config."""
    device, dtype = resolve_device(cfg.train.device), resolve_dtype(cfg.train.dtype)
    data = load_dataset(
        cfg.data.name,
        device=device,
        dtype=dtype,
        train_subset=cfg.data.train_subset,
        test_subset=cfg.data.test_subset,
        label_noise=cfg.data.label_noise,
        seed=cfg.train.seed,
        data_dir=cfg.data.data_dir,
        download=cfg.data.download,
        normalize=cfg.data.normalize,
        subset=cfg.data.subset,
        label_noise_style=cfg.data.label_noise_style,
    )
    return device, dtype, data


def load_weights(model: nn.Module, path: str, device: torch.device) -> None:
    """Start from a checkpoint's weights (the optimizer and its radius start afresh there)."""
    try:
        state = ckpt.load_checkpoint(Path(path), device, keys=())
        model.load_state_dict(state["model"] if "model" in state else state)
    except (OSError, RuntimeError, KeyError, pickle.UnpicklingError, ckpt.CheckpointError) as err:
        raise ValueError(
            f"train.init_from={path!r} cannot start this model ({type(err).__name__}); pass a "
            "checkpoint .pt from a run of the same model/width in its checkpoints/ directory"
        ) from None


def _member_model(
    cfg: Config, data: Dataset, device: torch.device, dtype: torch.dtype
) -> nn.Module:
    torch.manual_seed(cfg.train.seed)
    example = data.x_train[:8].to(device="cpu", dtype=torch.float32)  # makes a user model SI
    model = build_from_config(cfg.model, data.input_shape, data.num_classes, example)
    model = model.to(device=device, dtype=dtype)
    if cfg.train.init_from:  # e.g. a fine-tune branch starts from a pre-trained checkpoint
        load_weights(model, cfg.train.init_from, device)
    return model


def build_config_model(cfg: Config) -> nn.Module:
    """The model of ``cfg`` as its run builds it (a user model: made SI and checked), so that a
    sweep can refuse a bad factory or a non-SI model before any run starts."""
    device, dtype, data = load_run_data(cfg)
    return _member_model(cfg, data, device, dtype)


def _member(cfg: Config, out: Path, data: Dataset, device: torch.device) -> Member:
    sampler = BatchSampler(
        data.n_train,
        cfg.data.batch_size,
        torch.Generator().manual_seed(cfg.train.seed + 1),
        device=device,
    )
    aug = torch.Generator(device=device).manual_seed(cfg.train.seed + 2)
    return Member(cfg, out, sampler, aug if cfg.data.augment else None)


def total_steps(cfg: Config, steps_per_epoch: int) -> int:
    total = cfg.train.steps if cfg.train.steps is not None else cfg.train.epochs * steps_per_epoch
    if int(total) < 1:
        raise ValueError(
            f"train.epochs={cfg.train.epochs} / train.steps={cfg.train.steps} give "
            "no steps; set --epochs >= 1"
        )
    return int(total)


def check_batch_of_one(model: nn.Module, cfg: Config, n_train: int) -> None:
    """Refuse, before anything trains, a model with BatchNorm whose training batches
    (data.batch_size) or train-metric batches (train.eval_batch_size; BatchNorm in train
    mode) end in a batch of one sample, whose batch statistics do not exist. One rule for a
    single run and a pack; any config that never forms such a batch is untouched."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return
    for key, size in (
        ("data.batch_size", cfg.data.batch_size),
        ("train.eval_batch_size", cfg.train.eval_batch_size),
    ):
        if fixed_batches(n_train, size)[-1] == slice(n_train - 1, n_train):
            raise ValueError(
                f"{n_train} training samples in batches of {key}={size} leave a last batch "
                f"of 1 sample, which BatchNorm cannot normalise; set {key} to a size that "
                f"does not leave 1, or data.train_subset={n_train - 1}"
            )


def check_packable(cfgs: Sequence[Config]) -> None:
    if not can_pack(cfgs):
        keys = sorted({pack_key(c)[0] for c in cfgs})
        raise ValueError(
            f"these configs cannot share one module (kinds {keys}): they must be "
            "sphere mode, global sphere, a *_si model without head bias, train.ghost_batch=0, "
            "not train.deterministic, and equal except optim.elr and train.seed; group them "
            "with pack_key() or train them one by one"
        )


def build_pack(
    cfgs: Sequence[Config],
    outs: Sequence[Path],
    *,
    packed: bool | None = None,
    shared_batches: bool = False,
    layout: str | None = None,
) -> Pack:
    """K members from their configs. `packed` (default: K > 1) trains them in one ensemble
    module (see train.sharing); a single unpacked run may be any model and optimizer mode.
    `shared_batches` feeds every member member 0's batch order."""
    cfgs = list(cfgs)
    packed = len(cfgs) > 1 if packed is None else packed
    if packed:
        check_packable(cfgs)
    elif len(cfgs) != 1:
        raise ValueError(f"an unpacked pack holds one run, got {len(cfgs)}; pass packed=True")
    cfg = cfgs[0]
    device, dtype, data = load_run_data(cfg)
    models = [_member_model(c, data, device, dtype) for c in cfgs]
    members = [_member(c, Path(o), data, device) for c, o in zip(cfgs, outs)]
    check_batch_of_one(models[0], cfg, data.n_train)
    if shared_batches:
        for m in members[1:]:
            m.sampler, m.remaining = members[0].sampler, members[0].remaining
    first = models[0]
    if cfg.train.channels_last and data.x_train.dim() == 4 and not packed:
        # Module.to takes memory_format at run time; torch's stubs do not list it
        first = first.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    si = si_parameters(first)
    names = {id(p): n for n, p in first.named_parameters()}
    si_names = [names[id(p)] for p in si]
    opt = make_optimizer(cfg.optim, first, si)
    share: Solo | Packed
    augment = image_augment(cfg.data.augment_pad, data.zero_pixel)
    if packed:
        share = Packed(cfgs, models, opt, si_names, layout, augment)
        si = share.si
    else:
        share = Solo(cfg, first, opt, augment)
    recorder = Recorder(
        share.model,
        share,
        cfg.train.loss,
        eval_batches(data.x_train, data.y_train, cfg, share),
        eval_batches(data.x_test, data.y_test, cfg, share),
        si_names,
        list(si),
        subsets=label_noise_subsets(data, cfg, share),
    )
    return Pack(
        members, share, data, device, recorder, total_steps(cfg, members[0].sampler.steps_per_epoch)
    )


def eval_batches(
    x: Tensor, y: Tensor, cfg: Config, share: Solo | Packed
) -> list[tuple[Tensor, Tensor]]:
    """Fixed, unshuffled evaluation batches."""
    x = share.train_inputs(x)
    return [(x[s], y[s]) for s in fixed_batches(len(y), cfg.train.eval_batch_size)]


def label_noise_subsets(
    data: Dataset, cfg: Config, share: Solo | Packed
) -> dict[str, list[tuple[Tensor, Tensor]]]:
    """With label noise: fixed batches of the samples drawn for noise (`noisy`) and of the
    others (`clean`), each on its own, as the paper evaluates them; else nothing."""
    if data.noisy is None:
        return {}
    parts = {"noisy": data.noisy, "clean": ~data.noisy}
    return {
        name: eval_batches(data.x_train[m], data.y_train[m], cfg, share) if bool(m.any()) else []
        for name, m in parts.items()
    }


def build_run(cfg: Config) -> Run:
    """One config as a single run, at its initialisation (for diagnostics and scripts)."""
    return build_pack([cfg], [Path(".")]).member_run(0)
