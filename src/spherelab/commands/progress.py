"""Progress on the CLI's stderr (the library itself never prints): a one-line bar on a
terminal, plain lines elsewhere. The engine calls progress_bar / pack_progress with its progress
dicts inside a run or pack; a sweep's SweepDisplay shows the whole sweep (runs done, failed and
running, regimes, ETA) from run_sweep's SweepTracker, on every executor."""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from spherelab.sweep.progress import SweepProgress, SweepTracker
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


# Regime names as the README's tables number them.
REGIME_NUMBERS = {"convergence": "1", "chaotic_equilibrium": "2", "divergence": "3"}
TICK_S = 1.0  # a terminal's line is redrawn this often (ETA and running runs move on)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = round(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def sweep_line(state: SweepProgress, inner: dict[str, Any] | None = None) -> str:
    """The sweep's state as one line; `inner` (the engine's latest progress dict of the pack
    training in this process) adds that pack's progress and refines the ETA."""
    work, eta = float(state.done), state.eta
    if inner is not None:  # the running pack's finished share counts as work done
        work += len(inner["records"]) * inner["step"] / inner["total"]
        eta = state.elapsed * (state.total - work) / work if work > 0 else None
    named = sorted((REGIME_NUMBERS.get(name, name), n) for name, n in state.regimes.items())
    regimes = " ".join(f"{name}:{n}" for name, n in named)
    parts = [
        f"sweep{f' round {state.round}' if state.round else ''}: {state.done}/{state.total} "
        f"done, {state.failed} failed, {state.running} running",
        f"regimes {regimes or '-'}",
        f"eta {_duration(eta)}",
    ]
    if inner is not None:
        parts.append(
            f"{_pack_label(inner)}{inner['step'] / inner['total']:.0%} epoch {inner['epoch']:.0f}"
        )
    return " | ".join(parts)


class SweepDisplay:
    """A sweep's progress on stderr (the CLI's; the library never prints). On a terminal: ONE
    line redrawn in place (carriage return) on every change and every TICK_S, holding the
    sweep (runs done, failed, running, regimes, ETA) and, inline, the training pack; log lines
    clear it before they print. Elsewhere (a log file): a plain sweep line per finished run
    at most every `every_s` seconds (and the last one), and pack_progress's plain lines.

    Use as a context manager around run_sweep, with `sweep` as its sweep_progress and `train`
    as its train_progress."""

    def __init__(self, stream: TextIO | None = None, every_s: float = PLAIN_EVERY_S) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.tty = self.stream.isatty()
        self.every_s = every_s
        self.train: ProgressFn = self._train if self.tty else pack_progress(self.stream, every_s)
        self._tracker: SweepTracker | None = None
        self._inner: dict[str, Any] | None = None
        self._shown, self._last_plain, self._last_done = 0, -math.inf, -1
        self._hold = False  # set by clear(): the ticker skips one draw
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._filter = _ClearLine(self)

    def __enter__(self) -> SweepDisplay:
        if self.tty:
            for handler in _handlers_on(self.stream):
                handler.addFilter(self._filter)
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        for handler in _handlers_on(self.stream):
            handler.removeFilter(self._filter)
        with self._lock:
            if self._shown:
                self._draw()
                self.stream.write("\n")
                self.stream.flush()
                self._shown = 0

    def sweep(self, tracker: SweepTracker) -> None:
        """run_sweep's sweep_progress: a round started or a run finished."""
        with self._lock:
            self._tracker, self._inner = tracker, None  # a finished run ends the pack's share
            if self.tty:
                self._draw()
                return
            state = tracker.snapshot()
            now = time.monotonic()
            due = now - self._last_plain >= self.every_s or state.done == state.total
            if state.done != self._last_done and (due or state.done == 0):
                self._last_plain, self._last_done = now, state.done
                self.stream.write(sweep_line(state) + "\n")
                self.stream.flush()

    def _train(self, info: dict[str, Any]) -> None:
        with self._lock:
            self._inner = info
            self._draw()

    def _tick(self) -> None:
        while not self._stop.wait(TICK_S):
            with self._lock:
                if self._hold:  # a log line may be printing right now: draw at the next tick
                    self._hold = False
                    continue
                self._draw()

    def _draw(self) -> None:
        if self._tracker is None:
            return
        line = sweep_line(self._tracker.snapshot(), self._inner)
        self.stream.write("\r" + line + " " * max(0, self._shown - len(line)))
        self.stream.flush()
        self._shown = len(line)

    def clear(self) -> None:
        """Blank the line, so a log line prints on a clean one (the next draw restores it)."""
        with self._lock:
            self._hold = True
            if self._shown:
                self.stream.write("\r" + " " * self._shown + "\r")
                self.stream.flush()
                self._shown = 0


class _ClearLine(logging.Filter):
    """Clears the sweep's line before a log record is written to its stream."""

    def __init__(self, display: SweepDisplay) -> None:
        super().__init__()
        self.display = display

    def filter(self, record: logging.LogRecord) -> bool:
        self.display.clear()
        return True


def _handlers_on(stream: TextIO) -> list[logging.Handler]:
    """The logging handlers (root's and spherelab's) that write to `stream`."""
    loggers = [logging.getLogger(), logging.getLogger("spherelab")]
    return [h for lg in loggers for h in lg.handlers if getattr(h, "stream", None) is stream]
