"""Pack K single runs into one ensemble module and unpack member k; which runs can be packed.

Packing never re-implements a model: member k is built exactly as the single-run engine builds
it (seed, then models.build_from_config), and its state dict is laid into block k of the ensemble's
tensors. Unpacking gives back a state dict that the single model (and `spherelab diagnose`)
loads as is.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from spherelab.config import Config
from spherelab.ensemble.modules import pack_info

PACKABLE_FAMILIES = ("convnet_si", "resnet18_si", "mlp_si")


def pack_key(cfg: Config) -> tuple:
    """Runs with equal keys can share one ensemble module: everything but optim.elr and
    train.seed (the seed stays in the key when it also draws the data: a random train_subset
    or label_noise in the exact style)."""
    data = cfg.to_dict()
    del data["optim"]["elr"]
    if not _seed_draws_data(cfg):
        del data["train"]["seed"]
    return ("packable" if _packable_kind(cfg) else "single", json.dumps(data, sort_keys=True))


def _seed_draws_data(cfg: Config) -> bool:
    d = cfg.data
    random_subset = d.train_subset is not None and d.subset == "random"
    seeded_noise = d.label_noise != 0 and d.label_noise_style == "exact"
    return random_subset or seeded_noise


def _packable_kind(cfg: Config) -> bool:
    # A deterministic run is never packed: a packed module sums in another order than the
    # single run (batched matmuls, one BatchNorm over K members), so its floats would differ.
    return (
        cfg.optim.mode == "sphere"
        and cfg.optim.sphere == "global"
        and cfg.model.name in PACKABLE_FAMILIES
        and cfg.train.ghost_batch == 0  # ghost batches split one run's batch, not a pack's
        and not cfg.model.head_bias  # the packed heads are bias-free
        and not cfg.train.deterministic
    )


def can_pack(cfgs: Sequence[Config]) -> bool:
    """True when every config is a packable kind (sphere mode, global sphere, a *_si family
    with a bias-free head, no ghost batches, not train.deterministic) and all share one
    pack_key."""
    cfgs = list(cfgs)
    if not cfgs or not all(_packable_kind(c) for c in cfgs):
        return False
    return len({pack_key(c) for c in cfgs}) == 1


def join_members(tensors: Sequence[Tensor], batched: bool) -> Tensor:
    """K member tensors -> one packed tensor ([K, ...] if batched, else [K*n, ...]; 0-d: shared)."""
    first = tensors[0]
    if first.dim() == 0:
        return first.clone()
    return torch.stack(list(tensors)) if batched else torch.cat(list(tensors))


def member_view(packed: Tensor, members: int, batched: bool) -> Tensor:
    """A [K, ...] view of a packed tensor (index it with k for member k)."""
    if batched:
        return packed
    return packed.view(members, packed.shape[0] // members, *packed.shape[1:])


def member_slice(packed: Tensor, k: int, members: int, batched: bool) -> Tensor:
    """Member k's part of a packed tensor (a view; 0-d tensors are shared)."""
    if packed.dim() == 0:
        return packed
    return member_view(packed, members, batched)[k]


def pack_states(model: nn.Module, states: Sequence[dict[str, Tensor]], batched: set[str]) -> None:
    """Load K single-model state dicts into the ensemble `model` (see modules.batched_names)."""
    packed = {key: join_members([s[key] for s in states], key in batched) for key in states[0]}
    model.load_state_dict(packed)


def unpack_state(model: nn.Module, k: int, batched: set[str]) -> dict[str, Tensor]:
    """Member k's state dict, loadable by the single model (detached clones)."""
    members = pack_info(model)[0]
    return {
        key: member_slice(t, k, members, key in batched).detach().clone()
        for key, t in model.state_dict().items()
    }
