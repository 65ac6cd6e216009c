"""How spherelab calls a user's model: the example input (a tensor, an (x, y) batch or keyword
arguments) and the model output that holds the logits (a tensor, a tuple, a dict, a dataclass
or a Hugging Face ``ModelOutput``).

``output`` names the logits: None picks ``logits`` when the output has such a key or attribute,
else its first tensor; a string picks that key or attribute (e.g. ``"last_hidden_state"``); a
callable maps the whole output to the tensor.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

Output = str | Callable[[Any], torch.Tensor] | None
Example = torch.Tensor | Sequence[Any] | Mapping[str, Any]


def as_call(example: Example) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """(args, kwargs) of a forward call: a tensor is the one input, a mapping the keyword
    arguments, a tuple/list a batch whose first item is the input (as in ``(x, y)``)."""
    if isinstance(example, torch.Tensor):
        return (example,), {}
    if isinstance(example, Mapping):
        return (), dict(example)
    if isinstance(example, Sequence) and not isinstance(example, str) and len(example) > 0:
        return as_call(example[0])
    raise ValueError(
        f"example of type {type(example).__name__} is not an input; pass a tensor, an (x, y) "
        "batch or a dict of keyword arguments"
    )


def _items(out: Any) -> list[tuple[str, Any]]:
    if isinstance(out, Mapping):
        return list(out.items())
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        return [(f.name, getattr(out, f.name)) for f in dataclasses.fields(out)]
    if isinstance(out, Sequence) and not isinstance(out, str):
        return [(str(i), v) for i, v in enumerate(out)]
    return []


def select_output(out: Any, output: Output = None) -> torch.Tensor:
    """The logits tensor of a model output (see the module docstring for ``output``)."""
    picked: Any
    if callable(output):
        picked = output(out)
    elif isinstance(output, str):
        items = dict(_items(out))
        picked = items[output] if output in items else getattr(out, output, None)
        if picked is None:
            raise ValueError(
                f"output={output!r} is not a key or attribute of the model's "
                f"{type(out).__name__} output; use one of {sorted(items)}"
            )
    elif isinstance(out, torch.Tensor):
        picked = out
    else:
        pairs = _items(out)
        named = dict(pairs).get("logits", getattr(out, "logits", None))
        tensors = [v for _, v in pairs if isinstance(v, torch.Tensor)]
        picked = named if isinstance(named, torch.Tensor) else (tensors[0] if tensors else None)
    if not isinstance(picked, torch.Tensor):
        raise ValueError(
            f"the model returns {type(out).__name__} and no logits tensor was found in it; "
            "pass output='<key or attribute>' or output=<callable returning the logits>"
        )
    return picked


class Selected(nn.Module):
    """``model`` called with fixed keyword arguments, returning only its logits tensor (what the
    tracer and the checks see). The model is a submodule named ``model``."""

    def __init__(self, model: nn.Module, output: Output = None) -> None:
        super().__init__()
        self.model = model
        self.output = output

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return select_output(self.model(*args, **kwargs), self.output)
