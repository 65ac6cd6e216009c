"""Where a sweep stands while it runs, on every executor: runs done, failed and running, the
time so far and the regimes found so far. The library never prints: run_sweep hands a
SweepTracker to a caller's callback, which shows it (the CLI: commands/progress.py).

Completions reach the tracker in the parent process, from each executor's result loop (the
Outcome of every run, through run_sweep's on_done). A run counts as running while its run
directory is locked (spherelab.lock: the process that trains a run holds its directory's lock
file, and the file exists exactly as long as it is held), so the count is read from the
directories alone and holds for workers on other machines that share the file system.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from spherelab.lock import LOCK_FILE
from spherelab.sweep.tasks import Outcome


@dataclass(frozen=True)
class SweepProgress:
    """One look at a sweep round (round 0: the grid; 1, 2, ...: refinement rounds)."""

    round: int
    total: int  # runs this round trains (finished runs skipped on a rerun do not count)
    done: int  # of them, finished (failed ones included)
    failed: int
    running: int  # runs whose directory a worker holds now
    elapsed: float  # seconds since the round started
    regimes: Mapping[str, int]  # regime -> runs labelled so, this call of run_sweep so far

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate so far (None before the first run finishes)."""
        if not self.done:
            return None
        return self.elapsed * (self.total - self.done) / self.done


class SweepTracker:
    """Counts a sweep's outcomes round by round; `snapshot()` may be called from any thread
    at any time. Regimes add up over the rounds; the other counts are the current round's."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.round = -1  # no round started yet
        self._left: set[str] = set()
        self._total, self._failed = 0, 0
        self._regimes: Counter[str] = Counter()
        self._start = clock()
        self._lock = threading.Lock()

    def start_round(self, run_dirs: Iterable[str]) -> None:
        """A new round that trains the runs in `run_dirs`."""
        with self._lock:
            self.round += 1
            self._left = {str(d) for d in run_dirs}
            self._total, self._failed = len(self._left), 0
            self._start = self.clock()

    def add(self, outcome: Outcome) -> None:
        with self._lock:
            self._left.discard(outcome.run_dir)
            if outcome.error is not None:
                self._failed += 1
            else:
                regime = (outcome.summary or {}).get("regime")
                self._regimes[str(regime) if regime else "unlabelled"] += 1

    def snapshot(self) -> SweepProgress:
        with self._lock:
            left, failed, regimes = list(self._left), self._failed, dict(self._regimes)
            round_, total, start = max(self.round, 0), self._total, self._start
        running = sum((Path(d) / LOCK_FILE).exists() for d in left)
        return SweepProgress(
            round_, total, total - len(left), failed, running, self.clock() - start, regimes
        )


SweepProgressFn = Callable[[SweepTracker], None]
