"""The training engine: build a run (or a pack of K runs), step it, record, checkpoint, resume."""

from spherelab.train.engine import train_run
from spherelab.train.pack_engine import train_ensemble

__all__ = ["train_ensemble", "train_run"]
