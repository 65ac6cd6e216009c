"""On-device, vectorised image augmentation: random crop after padding, random horizontal flip."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from spherelab.data.base import DataError

PAD_MODES = ("reflect", "zeros")


def augment_images(
    x: Tensor,
    generator: torch.Generator,
    *,
    padding: int = 4,
    flip: bool = True,
    mode: str = "reflect",
) -> Tensor:
    """Crop each image of x (N, C, H, W) at a random offset of the padded image, then flip
    half of them left-right. One gather for the whole batch; random draws come from
    `generator` on its own device, so a CPU generator gives the same crops on any device."""
    if x.dim() != 4:
        raise DataError(f"augment_images needs a batch (N, C, H, W); got shape {tuple(x.shape)}")
    if mode not in PAD_MODES:
        raise DataError(f"mode={mode!r} is unknown; pass one of {PAD_MODES}")
    n, c, h, w = x.shape
    if padding < 0 or (mode == "reflect" and padding >= min(h, w)):
        raise DataError(
            f"padding={padding} is invalid for {h}x{w} images; use 0 <= padding "
            + ("< min(H, W) with mode='reflect'" if mode == "reflect" else "with mode='zeros'")
        )
    pad_mode = "reflect" if mode == "reflect" else "constant"
    padded = F.pad(x, (padding,) * 4, mode=pad_mode) if padding else x

    def draw(high: int) -> Tensor:
        return torch.randint(0, high, (n,), generator=generator, device=generator.device)

    dy, dx = draw(2 * padding + 1).to(x.device), draw(2 * padding + 1).to(x.device)
    mirror = (
        draw(2).to(x.device).bool() if flip else torch.zeros(n, dtype=torch.bool, device=x.device)
    )
    row = torch.arange(h, device=x.device)
    col = torch.arange(w, device=x.device)
    rows = dy[:, None] + row  # (N, H)
    # A flipped output column j reads crop column W - 1 - j.
    cols = dx[:, None] + torch.where(mirror[:, None], w - 1 - col, col)  # (N, W)
    # One gather over the flattened padded planes: index = row * padded_width + column.
    flat = (rows[:, :, None] * padded.shape[-1] + cols[:, None, :]).view(n, 1, h * w)
    out = torch.gather(padded.flatten(2), 2, flat.expand(n, c, h * w))
    return out.view(n, c, h, w)
