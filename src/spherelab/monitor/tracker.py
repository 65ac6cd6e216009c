"""On-device per-step accumulators of one group of SI weights: no host sync per step.

Per step (after ``optimizer.step()``): the effective gradient norm ||g_t|| ||w_t|| (the batch
gradient at the weights the step started from, times their norm) and the angle between w_t and
w_{t+1} (from ||w_t||, ||w_{t+1}|| and ||w_t - w_{t+1}||: three passes over the weights per
step, sub, norm and copy, all in place), summed (and the angle's maximum) in float64 on the
weights' device. ``read`` stacks everything a record needs into one tensor, so a record costs one host read.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from spherelab.metrics.geometry import angle_from_sides, joint_norm


class GroupTracker:
    """Sums since the last `read` of one SI group (a list of tensors seen as one vector)."""

    # the layout of `read`'s tensor before the per-tensor norms
    FIELDS = ("steps", "eff_grad_norm_sum", "angle_step_sum", "angle_step_max", "si_norm",
              "angle", "angle_to_init")  # fmt: skip

    def __init__(self, params: Sequence[nn.Parameter]) -> None:
        if not params:
            raise ValueError("an SI group is empty: give at least one parameter per group")
        self.params = list(params)
        cur = self._weights()
        self.init = [t.clone() for t in cur]
        self.prev = [t.clone() for t in cur]  # w_t: the weights before the next step
        self.at_record = [t.clone() for t in cur]  # the reference of `angle`
        self.prev_norm = joint_norm(cur)
        # the per-step passes run over pieces below torch's parallel grain on the CPU: one
        # thread each, so a step never waits for a busy second thread to wake (3-10x faster on
        # a loaded 2-core machine); views, so they follow the in-place optimizer updates
        self._cur_pieces, self._prev_pieces = _pieces(cur), _pieces(self.prev)
        device = cur[0].device
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)  # steps, grad, angle
        self.peak = torch.zeros((), dtype=torch.float64, device=device)

    def _weights(self) -> list[Tensor]:
        return [p.detach() for p in self.params]

    def update(self) -> None:
        """Account for the step just taken (call after optimizer.step(), before zero_grad)."""
        cur = self._weights()
        grads = [p.grad.detach() for p in self.params if p.grad is not None]
        grad = joint_norm(grads) if grads else self.prev_norm.new_zeros(())
        norm = joint_norm(cur)
        torch._foreach_sub_(self._prev_pieces, self._cur_pieces)  # in place: w_t - w_{t+1}
        theta = angle_from_sides(self.prev_norm, norm, joint_norm(self._prev_pieces))
        one = self.prev_norm.new_ones(())
        self.sums += torch.stack([one, grad * self.prev_norm, theta]).double()
        self.peak = torch.maximum(self.peak, theta.double())
        torch._foreach_copy_(self._prev_pieces, self._cur_pieces)
        self.prev_norm = norm

    def read(self) -> tuple[dict[str, float], list[float]]:
        """(sums since the last read and the state now by FIELDS, the per-tensor norms), from
        one host read; then start new sums."""
        cur = self._weights()
        now = torch.stack(
            [self.prev_norm, _angle(self.at_record, cur), _angle(self.init, cur)]
        ).double()
        tensor_norms = torch.stack(torch._foreach_norm(cur)).double()
        values = torch.cat([self.sums, self.peak.reshape(1), now, tensor_norms]).tolist()
        self.sums.zero_()
        self.peak.zero_()
        torch._foreach_copy_(self.at_record, cur)
        return dict(zip(self.FIELDS, values[:7])), values[7:]


def _angle(ref: list[Tensor], cur: list[Tensor]) -> Tensor:
    """The angle between two lists of tensors, from three norms (a record's, not per step)."""
    return angle_from_sides(
        joint_norm(ref), joint_norm(cur), joint_norm(torch._foreach_sub(cur, ref))
    )


PIECE = 16384  # elements: below ATen's parallel grain (32768), so each op runs on one thread


def _pieces(tensors: list[Tensor]) -> list[Tensor]:
    """Flat views of `tensors` in pieces of PIECE elements (CPU, contiguous); others whole."""
    out: list[Tensor] = []
    for t in tensors:
        split = t.device.type == "cpu" and t.is_contiguous()
        out.extend(t.view(-1).split(PIECE) if split else [t])
    return out
