"""Building blocks of an ensemble module: K members side by side in one network.

Member k owns the k-th block along dim 0 of every tensor (the layout SphereSGD(members=K)
expects): batched-matmul weights are [K, out, in], conv weights and BatchNorm buffers hold K
blocks ([K*out, in, kh, kw], [K*C]). Activations come in one of two layouts (LAYOUTS):

- ``channels`` (models with convolutions): [B, K*C, H, W]. Convolutions become grouped
  convolutions, a BatchNorm over K*C channels is exactly one BatchNorm per member, and
  element-wise layers and pooling act per channel as they are.
- ``features`` (models made of linears: MLPs): [K, F, B], features first and the batch last.
  Every linear is one bmm of [K, out, in] weights with no transposes or copies, and
  MemberNorm1d normalises each row of the [K*F, B] view: one BatchNorm per member. This layout
  was measured faster on CPU than batch-first activations, which need a copy around every bmm
  (BENCHMARKS.md).

The frozen head becomes one head per member and returns logits [K, B, classes] in both
layouts. The single model's own forward() drives the ensemble.
"""

from __future__ import annotations

import copy
from typing import cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F

LAYOUTS = ("channels", "features")
_ELEMENTWISE = (
    nn.ReLU,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Flatten,
    nn.Identity,
    nn.Sequential,
)


class BatchedLinear(nn.Module):
    """K bias-free linears in one bmm, weight [K, out, in]: [K, in, B] -> [K, out, B] in the
    ``features`` layout, [B, K*in] -> [B, K*out] in the ``channels`` layout."""

    def __init__(self, members: int, in_features: int, out_features: int, layout: str) -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout={layout!r} is unknown; use one of {LAYOUTS}")
        self.members, self.in_features, self.out_features = members, in_features, out_features
        self.layout = layout
        self.weight = nn.Parameter(torch.empty(members, out_features, in_features))

    def forward(self, x: Tensor) -> Tensor:
        if self.layout == "features":
            return torch.bmm(self.weight, x)
        k, b = self.members, x.shape[0]
        out = torch.bmm(
            x.reshape(b, k, self.in_features).transpose(0, 1), self.weight.transpose(1, 2)
        )
        return out.transpose(0, 1).reshape(b, k * self.out_features)


class MemberHeads(BatchedLinear):
    """One frozen head per member: logits [K, B, classes] from either layout. In the
    ``features`` layout weight times features is the fast orientation of this thin matmul;
    the ``channels`` layout keeps the single model's orientation and rounding."""

    def forward(self, x: Tensor) -> Tensor:
        if self.layout == "features":
            return torch.bmm(self.weight, x).transpose(1, 2)
        x = x.reshape(x.shape[0], self.members, self.in_features).transpose(0, 1)
        return torch.bmm(x, self.weight.transpose(1, 2))


class MemberNorm1d(nn.BatchNorm1d):
    """One BatchNorm1d per member on ``features``-layout activations [K, F, B] (K*F channels).

    Batch statistics come from a layer norm over the rows of the [K*F, B] view: the same
    normalisation (biased variance, eps inside the root), and on CPU 1.4x faster than a
    BatchNorm over [1, K*F, B] (BENCHMARKS.md). Running statistics are updated as
    BatchNorm updates them (unbiased variance, ``momentum``) and used in eval mode."""

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, x.shape[-1])
        if not self.training and self.track_running_stats:
            stats = (self.running_mean, self.running_var)
            out = F.batch_norm(rows.unsqueeze(0), *stats, training=False, eps=self.eps)
            return out.view_as(x)
        if rows.shape[-1] == 1:  # BatchNorm's own check: batch statistics of one sample
            raise ValueError(
                "Expected more than 1 value per channel when training, got input size "
                f"{tuple(x.shape)}; use a batch size > 1 (and no last batch of 1)"
            )
        out, mean, rstd = torch.native_layer_norm(rows, [rows.shape[-1]], None, None, self.eps)
        running = (self.running_mean, self.running_var, self.num_batches_tracked)
        if self.training and running[0] is not None and running[1] is not None:
            with torch.no_grad():
                n = rows.shape[-1]
                var = (rstd.square().reciprocal() - self.eps).mul_(n / max(n - 1, 1))
                if running[2] is not None:
                    running[2].add_(1)
                factor = self.momentum
                if factor is None:  # BatchNorm's cumulative average: reads the count (a sync)
                    factor = 1.0 / (float(running[2]) if running[2] is not None else 1.0)
                running[0].lerp_(mean.view(-1), factor)
                running[1].lerp_(var.view(-1), factor)
        return out.view_as(x)


def member_layout(template: nn.Module) -> str:
    """``channels`` for a model with convolutions, ``features`` for one made of linears."""
    return "channels" if any(isinstance(m, nn.Conv2d) for m in template.modules()) else "features"


def _grouped_conv(conv: nn.Conv2d, k: int) -> nn.Conv2d:
    if conv.bias is not None:
        raise ValueError(
            f"cannot pack {conv}: a conv with a bias is not scale-invariant; pack only *_si models"
        )
    return nn.Conv2d(
        k * conv.in_channels,
        k * conv.out_channels,
        cast(tuple[int, int], conv.kernel_size),
        stride=cast(tuple[int, int], conv.stride),
        padding=cast("str | tuple[int, int]", conv.padding),
        dilation=cast(tuple[int, int], conv.dilation),
        groups=k * conv.groups,
        bias=False,
        padding_mode=conv.padding_mode,
    )


def _member_norm(norm: nn.modules.batchnorm._BatchNorm, k: int, layout: str) -> nn.Module:
    if norm.affine:
        raise ValueError(
            f"cannot pack {norm}: affine norms are not scale-invariant; pack only *_si models"
        )
    if layout == "features" and norm.momentum is None:
        raise ValueError(
            f"cannot pack {norm}: momentum=None (a cumulative average) is not supported in "
            "the features layout; give the norm a momentum such as 0.1"
        )
    kind = MemberNorm1d if layout == "features" else type(norm)
    return kind(
        k * norm.num_features,
        eps=norm.eps,
        momentum=norm.momentum,
        affine=False,
        track_running_stats=norm.track_running_stats,
    )


def _has_bias(module: nn.Module) -> bool:
    return getattr(module, "bias", None) is not None  # nn.Linear types its bias as never None


def _replacement(module: nn.Module, k: int, head: bool, layout: str) -> nn.Module | None:
    if head:
        if not isinstance(module, nn.Linear) or _has_bias(module):
            raise ValueError("the head must be a bias-free nn.Linear (a *_si model) to pack it")
        heads = MemberHeads(k, module.in_features, module.out_features, layout)
        heads.weight.requires_grad_(module.weight.requires_grad)
        return heads
    if isinstance(module, nn.Conv2d):
        return _grouped_conv(module, k)
    if isinstance(module, nn.Linear):
        if _has_bias(module):
            raise ValueError(
                f"cannot pack {module}: a linear with a bias feeding a norm is not "
                "scale-invariant; pack only *_si models"
            )
        return BatchedLinear(k, module.in_features, module.out_features, layout)
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return _member_norm(module, k, layout)
    if isinstance(module, nn.Flatten) and layout == "features":
        return nn.Identity()  # member_inputs() already flattened every sample
    if list(module.parameters(recurse=False)) and not isinstance(module, _ELEMENTWISE):
        raise ValueError(
            f"cannot pack a {type(module).__name__}; the ensemble supports convs, "
            "linears, BatchNorm and element-wise layers (the *_si zoo)"
        )
    return None


def ensemble_skeleton(template: nn.Module, members: int, layout: str | None = None) -> nn.Module:
    """A copy of `template` (a ZooModel with ``.head``) with every layer widened to `members`
    members, in the activation `layout` (default member_layout(template); an MLP may also use
    ``channels``), stored as ``model.member_layout``. The weights are uninitialised (fill them
    with pack.pack_states)."""
    if isinstance(members, bool) or not isinstance(members, int) or members < 1:
        raise ValueError(f"members={members!r} must be a positive integer")
    natural = member_layout(template)
    layout = layout or natural
    if layout not in LAYOUTS or (layout == "features" and natural == "channels"):
        raise ValueError(
            f"layout={layout!r} does not fit a {type(template).__name__}; use {natural!r} "
            f"(the layouts are {LAYOUTS}; convolutions need 'channels')"
        )
    model = copy.deepcopy(template)
    head = getattr(template, "head", None)
    for name, module in list(template.named_modules()):
        if not name:
            continue
        new = _replacement(module, members, module is head, layout)
        if new is not None:
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, new)
    vars(model).update(members=members, member_layout=layout)  # plain attributes of the module
    return model


def pack_info(model: nn.Module) -> tuple[int, str]:
    """(members, activation layout) of a module built by ensemble_skeleton."""
    info = vars(model)
    return int(info["members"]), str(info["member_layout"])


def batched_names(model: nn.Module) -> set[str]:
    """State-dict keys whose dim 0 indexes members ([K, ...]); other tensors hold K blocks
    along dim 0 ([K*n, ...]) and 0-d tensors are shared by all members."""
    return {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, BatchedLinear)}
