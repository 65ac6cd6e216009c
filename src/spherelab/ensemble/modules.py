"""Building blocks of an ensemble module: K members side by side in one network.

Layout (the one SphereSGD(members=K) expects): member k owns the k-th block along dim 0 of every
tensor. Convolutions become grouped convolutions (input [B, K*C, H, W], weight [K*out, in, kh,
kw]); hidden linears become batched matmuls (weight [K, out, in], activations [B, K*features]);
a BatchNorm over K*C channels is exactly one BatchNorm per member; the frozen head becomes one
head per member and returns logits [B, K, classes]. Element-wise layers and pooling act per
channel and are kept as they are, so the single model's own forward() drives the ensemble.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

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
    """K bias-free linears in one bmm: [B, K*in] -> [B, K*out], weight [K, out, in]."""

    def __init__(self, members: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.members, self.in_features, self.out_features = members, in_features, out_features
        self.weight = nn.Parameter(torch.empty(members, out_features, in_features))

    def forward(self, x: Tensor) -> Tensor:
        k, b = self.members, x.shape[0]
        out = torch.bmm(
            x.reshape(b, k, self.in_features).transpose(0, 1), self.weight.transpose(1, 2)
        )
        return out.transpose(0, 1).reshape(b, k * self.out_features)


class MemberHeads(BatchedLinear):
    """One frozen head per member: [B, K*features] -> logits [B, K, classes]."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x).view(x.shape[0], self.members, self.out_features)


def _grouped_conv(conv: nn.Conv2d, k: int) -> nn.Conv2d:
    if conv.bias is not None:
        raise ValueError(
            f"cannot pack {conv}: a conv with a bias is not scale-invariant; pack only *_si models"
        )
    return nn.Conv2d(
        k * conv.in_channels,
        k * conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=k * conv.groups,
        bias=False,
        padding_mode=conv.padding_mode,
    )


def _member_norm(norm: nn.modules.batchnorm._BatchNorm, k: int) -> nn.Module:
    if norm.affine:
        raise ValueError(
            f"cannot pack {norm}: affine norms are not scale-invariant; pack only *_si models"
        )
    return type(norm)(
        k * norm.num_features,
        eps=norm.eps,
        momentum=norm.momentum,
        affine=False,
        track_running_stats=norm.track_running_stats,
    )


def _replacement(module: nn.Module, k: int, head: bool) -> nn.Module | None:
    if head:
        if not isinstance(module, nn.Linear) or module.bias is not None:
            raise ValueError("the head must be a bias-free nn.Linear (a *_si model) to pack it")
        heads = MemberHeads(k, module.in_features, module.out_features)
        heads.weight.requires_grad_(module.weight.requires_grad)
        return heads
    if isinstance(module, nn.Conv2d):
        return _grouped_conv(module, k)
    if isinstance(module, nn.Linear):
        if module.bias is not None:
            raise ValueError(
                f"cannot pack {module}: a linear with a bias feeding a norm is not "
                "scale-invariant; pack only *_si models"
            )
        return BatchedLinear(k, module.in_features, module.out_features)
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return _member_norm(module, k)
    if list(module.parameters(recurse=False)) and not isinstance(module, _ELEMENTWISE):
        raise ValueError(
            f"cannot pack a {type(module).__name__}; the ensemble supports convs, "
            "linears, BatchNorm and element-wise layers (the *_si zoo)"
        )
    return None


def ensemble_skeleton(template: nn.Module, members: int) -> nn.Module:
    """A copy of `template` (a ZooModel with ``.head``) with every layer widened to `members`
    members; the weights are uninitialised (fill them with pack.pack_states)."""
    if isinstance(members, bool) or not isinstance(members, int) or members < 1:
        raise ValueError(f"members={members!r} must be a positive integer")
    model = copy.deepcopy(template)
    head = getattr(template, "head", None)
    for name, module in list(template.named_modules()):
        if not name:
            continue
        new = _replacement(module, members, module is head)
        if new is not None:
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, new)
    model.members = members
    return model


def batched_names(model: nn.Module) -> set[str]:
    """State-dict keys whose dim 0 indexes members ([K, ...]); other tensors hold K blocks
    along dim 0 ([K*n, ...]) and 0-d tensors are shared by all members."""
    return {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, BatchedLinear)}
