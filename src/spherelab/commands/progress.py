"""A one-line progress bar on a terminal (the CLI's; the library itself never prints)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO


def progress_bar(
    label: str = "", stream: TextIO | None = None
) -> Callable[[dict[str, Any]], None] | None:
    """A callback for engine progress dicts; None when stream (default: stderr) is not a
    terminal. The stream is looked up at call time, so redirected stderr is honoured."""
    stream = sys.stderr if stream is None else stream
    if not stream.isatty():
        return None

    def show(info: dict[str, Any]) -> None:
        frac = info["step"] / info["total"]
        done = int(30 * frac)
        eta = info["elapsed"] / max(frac, 1e-9) * (1 - frac) if frac > 0 else 0.0
        rec = info["record"]
        stream.write(
            f"\r{label}[{'#' * done}{'.' * (30 - done)}] {frac:6.1%} "
            f"epoch {info['epoch']:.0f} loss {rec['train_loss']:.3g} "
            f"acc {rec['test_acc']:.3f} eta {eta:5.0f}s "
        )
        if info["step"] >= info["total"]:
            stream.write("\n")
        stream.flush()

    return show
