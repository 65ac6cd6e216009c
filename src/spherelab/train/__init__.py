"""The training engine: one engine for a run or a pack of K runs (a single run is the pack of
one): build, loop with record hooks, step, recorder, run files, checkpoints, losses, schedules."""

from spherelab.train.build import Run, build_run
from spherelab.train.engine import train_ensemble, train_run
from spherelab.train.loop import RecordEvent, RecordHook
from spherelab.train.recorder import METRIC_KEYS
from spherelab.train.run_files import relabel_run

__all__ = [
    "METRIC_KEYS",
    "RecordEvent",
    "RecordHook",
    "Run",
    "build_run",
    "relabel_run",
    "train_ensemble",
    "train_run",
]
