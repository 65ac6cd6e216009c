"""On-device, vectorised image augmentation: random crop after padding, random horizontal flip."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

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
    fill: float | Tensor = 0.0,
) -> Tensor:
    """Crop each image of x (N, C, H, W) at a random offset of the padded image, then flip
    half of them left-right. One gather for the whole batch; random draws come from
    `generator` on its own device, so a CPU generator gives the same crops on any device.
    `mode="zeros"` pads with `fill`: a number, or one value per channel (shape (C, 1, 1)), e.g.
    the Dataset's `zero_pixel`, which makes it the paper's zero padding of the raw image."""
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
    padded = _pad(x, padding, mode, fill) if padding else x

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


def _pad(x: Tensor, padding: int, mode: str, fill: float | Tensor) -> Tensor:
    if mode == "reflect":
        return F.pad(x, (padding,) * 4, mode="reflect")
    n, c, h, w = x.shape
    value = torch.as_tensor(fill, dtype=x.dtype, device=x.device)
    padded = value.expand(n, c, h + 2 * padding, w + 2 * padding).clone()
    padded[:, :, padding : padding + h, padding : padding + w] = x
    return padded


Augment = Callable[[Tensor, torch.Generator], Tensor]


def image_augment(pad: str = "reflect", zero_pixel: Tensor | None = None) -> Augment:
    """The training augmentation of a data set: crop after padding by 4 and flip. `pad` is
    `reflect`, or `zeros`: pad with the value a raw zero pixel has after normalization
    (`zero_pixel`; 0 when None), as the paper's random crop pads the raw image."""
    if pad not in PAD_MODES:
        raise DataError(f"data.augment_pad={pad!r} is unknown; pass one of {PAD_MODES}")
    fill = 0.0 if zero_pixel is None else zero_pixel
    return partial(augment_images, mode=pad, fill=fill)
