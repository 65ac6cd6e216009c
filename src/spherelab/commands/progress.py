"""Progress of training on the CLI's stderr (the library itself never prints): a one-line bar
on a terminal, plain lines elsewhere; the engine calls these with its progress dicts."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from spherelab.train.loop import ProgressFn

Label = str | Callable[[dict[str, Any]], str]
# Not on a terminal, a plain line at most this often (and at the end), so logs stay short.
PLAIN_EVERY_S = 30.0


def _line(label: Label, info: dict[str, Any]) -> str:
    frac = info["step"] / info["total"]
    eta = info["elapsed"] / max(frac, 1e-9) * (1 - frac) if frac > 0 else 0.0
    rec = info["record"]
    return (
        f"{label(info) if callable(label) else label}{frac:6.1%} epoch {info['epoch']:.0f} "
        f"loss {rec['train_loss']:.3g} acc {rec['test_acc']:.3f} eta {eta:5.0f}s"
    )


def progress_bar(label: Label = "", stream: TextIO | None = None) -> ProgressFn | None:
    """A callback for engine progress dicts; None when stream (default: stderr) is not a
    terminal. The stream is looked up at call time, so redirected stderr is honoured."""
    stream = sys.stderr if stream is None else stream
    if not stream.isatty():
        return None

    def show(info: dict[str, Any]) -> None:
        done = int(30 * info["step"] / info["total"])
        stream.write(f"\r[{'#' * done}{'.' * (30 - done)}] {_line(label, info)} ")
        if info["step"] >= info["total"]:
            stream.write("\n")
        stream.flush()

    return show


def _pack_label(info: dict[str, Any]) -> str:
    k = len(info["records"])
    return f"pack of {k} runs: " if k > 1 else "run: "


def pack_progress(stream: TextIO | None = None, every_s: float = PLAIN_EVERY_S) -> ProgressFn:
    """Progress inside each pack of a sweep (its runs train together, so their per-run lines
    come only at its end): the bar on a terminal, else a plain line at the first call, then
    at most every `every_s` seconds, and at the last step."""
    stream = sys.stderr if stream is None else stream
    bar = progress_bar(_pack_label, stream)
    if bar is not None:
        return bar
    last = -math.inf

    def plain(info: dict[str, Any]) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= every_s or info["step"] >= info["total"]:
            last = now
            line = _line(_pack_label, info)
            stream.write(f"{line} (step {info['step']}/{info['total']})\n")
            stream.flush()

    return plain
