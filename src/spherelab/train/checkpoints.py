"""A run's record schedule (log-spaced epochs) and its checkpoint files (atomic saves, loads with
weights_only that name a damaged file); JSON files are spherelab.io's."""

from __future__ import annotations

import io
import math
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from spherelab.io import atomic_path

CKPT_DIR = "checkpoints"
RECORD_SCHEDULES = ("log", "linear", "epoch")


def record_steps(
    total_steps: int, steps_per_epoch: int, n_records: int, mode: str = "log"
) -> list[int]:
    """Steps at which a record is taken: 0, then log- (or linearly) spaced EPOCHS up to the end,
    or every epoch (mode "epoch", the paper's; n_records is then unused).

    Records fall on epoch boundaries when the run is long enough (so checkpoints there resume
    cleanly); the final step is always included.
    """
    if mode not in RECORD_SCHEDULES:
        raise ValueError(
            f"record_schedule={mode!r} is unknown; use one of {', '.join(RECORD_SCHEDULES)}"
        )
    if mode == "epoch":
        ends = range(steps_per_epoch, total_steps, steps_per_epoch)
        return sorted({0, total_steps, *ends})
    total_epochs = total_steps / steps_per_epoch
    n = max(int(n_records), 3)  # the regime classifier needs init + two more records
    if mode == "log" and total_epochs > 1:
        epochs = [math.exp(math.log(total_epochs) * i / (n - 1)) for i in range(n)]
    else:
        epochs = [total_epochs * i / (n - 1) for i in range(n)]
    steps = {0, total_steps}
    for e in epochs:
        step = round(e * steps_per_epoch) if e < 1 else round(e) * steps_per_epoch
        steps.add(min(max(step, 1), total_steps))
    return sorted(steps)


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / CKPT_DIR / f"step_{step:09d}.pt"


class CheckpointError(ValueError):
    """A file that is not a readable spherelab checkpoint (truncated, damaged, or foreign)."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(
            f"{path} is not a readable spherelab checkpoint ({why}: truncated, damaged or not "
            "written by spherelab); delete it to fall back to an earlier one, or rerun the run"
        )
        self.path, self.why = path, why


def save_checkpoint(run_dir: Path, step: int, payload: dict[str, Any]) -> Path:
    path = checkpoint_path(run_dir, step)
    _save(payload, path)
    return path


def _save(payload: dict[str, Any], path: Path) -> None:
    """torch.save through memory: a failed write (a full disk) is then a plain OSError with
    its errno, not torch's RuntimeError, and atomic_path removes the partial file."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())


def list_checkpoints(run_dir: Path) -> list[Path]:
    return sorted((run_dir / CKPT_DIR).glob("step_*.pt"))


def load_checkpoint(
    path: Path, device: torch.device | str = "cpu", keys: tuple[str, ...] = ("model", "step")
) -> dict[str, Any]:
    """A checkpoint written by spherelab (a dict holding `keys`), loaded with weights_only (a
    pickle that would run code is refused); CheckpointError names the file otherwise."""
    try:
        with warnings.catch_warnings():  # torch's note on the pickle protocol of a foreign file
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise
    except (
        RuntimeError,
        pickle.UnpicklingError,
        EOFError,
        zipfile.BadZipFile,
        ValueError,
        AttributeError,
        ImportError,
        IndexError,
        KeyError,
        TypeError,
    ) as err:
        # torch's own text may suggest weights_only=False: never the advice for a foreign file
        raise CheckpointError(path, type(err).__name__) from None
    if not isinstance(state, dict) or any(k not in state for k in keys):
        raise CheckpointError(path, "unexpected contents")
    return state


def checkpoint_step(path: Path) -> int:
    return int(path.stem.split("_")[1])


def save_init(run_dir: Path, init: list[torch.Tensor]) -> None:
    """The SI tensors at initialization (for angle-to-init, on resume and in diagnostics)."""
    # copies: a view would save its whole storage (a packed tensor: every member's part)
    _save({"init": [t.detach().to("cpu", copy=True) for t in init]}, run_dir / CKPT_DIR / "init.pt")


def load_init(run_dir: Path, device: torch.device | str = "cpu") -> list[torch.Tensor]:
    return list(load_checkpoint(run_dir / CKPT_DIR / "init.pt", device, keys=("init",))["init"])
