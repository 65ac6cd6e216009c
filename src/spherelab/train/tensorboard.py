"""TensorBoard scalars: a record row (or any flat/nested dict of numbers) as event-file scalars.

``ScalarLog`` writes rows into one log directory; ``TensorBoardHook`` is the record hook that
carries out ``train.log=tensorboard`` for spherelab's own runs (each run into RUN/tensorboard/).
Nested objects (``layer_norms``, ``layer_elr``) become tags ``key/name``; non-numbers are
skipped. tensorboard is an optional dependency (extra ``tensorboard``), imported on first use.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from spherelab.train.loop import RecordEvent

TENSORBOARD_DIR = "tensorboard"  # inside a run directory


def scalars(row: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """(tag, value) of every number in `row`, nested objects flattened as `key/name`."""
    for key, value in row.items():
        tag = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from scalars(value, f"{tag}/")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            yield tag, float(value)


class ScalarLog:
    """One TensorBoard event directory; `write(step, row)` adds the row's numbers at `step`."""

    def __init__(self, log_dir: str | Path) -> None:
        try:  # optional dependency, kept out of start-up
            from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415
        except ImportError as err:
            raise ValueError(
                "TensorBoard logging needs the tensorboard package: "
                "pip install 'spherelab[tensorboard]' (or drop train.log=tensorboard)"
            ) from err
        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(str(self.log_dir))

    def write(self, step: int, row: Mapping[str, Any]) -> None:
        for tag, value in scalars(row):
            if tag not in ("step",) and not math.isinf(value):  # inf would break the plots
                self._writer.add_scalar(tag, value, step)
        self._writer.flush()  # records are rare: every one is on disk when it is written

    def close(self) -> None:
        self._writer.close()


class TensorBoardHook:
    """A record hook for the training engine: every record of each run as TensorBoard scalars
    in RUN/tensorboard/ (one event directory per run, members of a pack included)."""

    serves = "train.log"  # the config setting this hook carries out

    def __init__(self) -> None:
        if importlib.util.find_spec("tensorboard") is None:  # fail before training, not at a record
            raise ValueError(
                "train.log=tensorboard needs the tensorboard package: "
                "pip install 'spherelab[tensorboard]' (or drop --log tensorboard)"
            )
        self._logs: dict[Path, ScalarLog] = {}

    def __call__(self, event: RecordEvent) -> None:
        out = event.out
        if out not in self._logs:
            self._logs[out] = ScalarLog(out / TENSORBOARD_DIR)
        self._logs[out].write(event.step, event.row)
        # a run's last record (its final step, or the non-finite one that ends it): close its
        # writer, so that a sweep of many runs holds no more open writers than runs in flight
        if event.step >= event.pack.total_steps or not math.isfinite(event.row["train_loss"]):
            self._logs.pop(out).close()

    @property
    def open_runs(self) -> int:
        """How many runs' writers are open (runs recorded but not finished)."""
        return len(self._logs)
