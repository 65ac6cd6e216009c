"""How fast a kind of run trains on one machine: a few timed optimizer steps (and one
evaluation record) of a real pack built by the engine, and the small JSON file that carries the
measurement from a target machine to the one that plans a sweep (spherelab.sweep.plan).

A calibration file (format 1)::

    {"format": "spherelab-calibration", "version": 1,
     "device": "cpu", "device_name": "x86_64", "threads": 2, "torch": "2.13.0",
     "kinds": [{"kind": "3f2a...", "label": "mlp_si on mnist1d, batch 128",
                "steps_per_epoch": 32,
                "steps_per_s": {"1": 410.0, "16": 95.0},
                "record_s": {"1": 0.02, "16": 0.11}}]}

`kind` names everything in a run's config that sets the cost of a step (run_kind: the pack key
without ELR, seed and the length of the run); `steps_per_s` and `record_s` are per pack size K
(optimizer steps per second of the whole pack, seconds per evaluation record of the pack).
"""

from __future__ import annotations

import hashlib
import json
import platform
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from spherelab.config import Config, ConfigError
from spherelab.ensemble.pack import pack_key
from spherelab.io import atomic_write_text, dumps
from spherelab.runtime import deterministic_mode
from spherelab.train.build import build_pack
from spherelab.train.loop import Stepper, next_batch

FORMAT, VERSION = "spherelab-calibration", 1
WARMUP_STEPS = 3  # first steps allocate, compile and fill caches: never timed
MIN_STEPS, MIN_SECONDS = 4, 0.5  # timed steps: at least this many, doubled until this long
MAX_STEPS = 256
# train.* keys that set a run's length or its files, not the cost of one step
LENGTH_KEYS = ("epochs", "steps", "records", "record_schedule", "checkpoints", "seed")


def run_kind(cfg: Config) -> str:
    """A short name for everything that sets the cost of a step of this run (its pack key
    without ELR, seed and run length): runs of one kind train at one speed per pack size."""
    packable, text = pack_key(cfg)
    data = json.loads(text)
    for key in LENGTH_KEYS:
        data["train"].pop(key, None)
    blob = json.dumps([packable, data], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def kind_label(cfg: Config) -> str:
    return f"{cfg.model.name} on {cfg.data.name}, batch {cfg.data.batch_size}"


@dataclass(frozen=True)
class Speed:
    """One kind of run on one machine: seconds per step and per record, by pack size."""

    kind: str
    label: str
    steps_per_epoch: int
    steps_per_s: Mapping[int, float]  # pack size K -> optimizer steps per second of the pack
    record_s: Mapping[int, float]  # pack size K -> seconds per evaluation record of the pack

    def step_seconds(self, size: int) -> float:
        return _interpolate({k: 1.0 / v for k, v in self.steps_per_s.items()}, size)

    def record_seconds(self, size: int) -> float:
        return _interpolate(self.record_s, size)


def _interpolate(by_size: Mapping[int, float], size: int) -> float:
    """Linear in K between measured sizes; below the smallest, the smallest's cost; above the
    largest, proportional to K (a pack never costs less per member than a measured one)."""
    sizes = sorted(by_size)
    if size <= sizes[0]:
        return by_size[sizes[0]]
    if size >= sizes[-1]:
        return by_size[sizes[-1]] * size / sizes[-1]
    hi = next(s for s in sizes if s >= size)
    lo = max(s for s in sizes if s <= size)
    if hi == lo:
        return by_size[lo]
    w = (size - lo) / (hi - lo)
    return by_size[lo] * (1 - w) + by_size[hi] * w


@dataclass(frozen=True)
class Calibration:
    """Speeds of some kinds of run measured on one machine."""

    device: str  # cpu | cuda
    device_name: str
    threads: int
    torch: str
    speeds: Mapping[str, Speed]  # by kind
    source: str = "measured here"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "device": self.device,
            "device_name": self.device_name,
            "threads": self.threads,
            "torch": self.torch,
            "kinds": [
                {
                    "kind": s.kind,
                    "label": s.label,
                    "steps_per_epoch": s.steps_per_epoch,
                    "steps_per_s": {str(k): v for k, v in sorted(s.steps_per_s.items())},
                    "record_s": {str(k): v for k, v in sorted(s.record_s.items())},
                }
                for s in self.speeds.values()
            ],
        }


def write_calibration(path: str | Path, calibration: Calibration) -> Path:
    path = Path(path)
    atomic_write_text(path, dumps(calibration.to_dict(), indent=2) + "\n")
    return path


def read_calibration(path: str | Path) -> Calibration:
    """A calibration file, checked; anything wrong is one ConfigError naming the file."""
    path = Path(path)
    fix = "write one with `spherelab sweep ... --plan --calibration-out FILE` on the target machine"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not JSON"
        raise ConfigError(f"calibration file {path}: {reason}; {fix}") from None
    try:
        return _from_dict(data, source=str(path))
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        what = f"missing {err}" if isinstance(err, KeyError) else " ".join(str(err).split())
        raise ConfigError(f"calibration file {path} is not valid ({what}); {fix}") from None


def _from_dict(data: Any, source: str) -> Calibration:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"format is not {FORMAT!r}")
    if data.get("version") != VERSION:
        raise ValueError(f"version {data.get('version')!r} is not {VERSION}")
    speeds = {}
    for entry in data["kinds"]:
        steps, records = _by_size(entry["steps_per_s"]), _by_size(entry["record_s"])
        if not steps or set(steps) != set(records) or int(entry["steps_per_epoch"]) < 1:
            raise ValueError(f"kind {entry['kind']!r} needs the same pack sizes in both tables")
        speeds[str(entry["kind"])] = Speed(
            str(entry["kind"]), str(entry["label"]), int(entry["steps_per_epoch"]), steps, records
        )
    return Calibration(
        str(data["device"]),
        str(data["device_name"]),
        int(data["threads"]),
        str(data["torch"]),
        speeds,
        source,
    )


def _by_size(table: Mapping[str, Any]) -> dict[int, float]:
    out = {int(k): float(v) for k, v in table.items()}
    if any(k < 1 or not v > 0 or v == float("inf") for k, v in out.items()):
        raise ValueError("pack sizes must be >= 1 and every figure a positive number")
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def measure_pack(cfgs: Sequence[Config]) -> tuple[float, float, int]:
    """(optimizer steps per second, seconds per record, steps per epoch) of these configs
    trained as one pack here, after WARMUP_STEPS untimed steps. Builds the pack in a scratch
    directory that is removed again; nothing is written anywhere else."""
    with tempfile.TemporaryDirectory(prefix="spherelab-calibration-") as scratch:
        with deterministic_mode(cfgs[0].train.deterministic):
            outs = [Path(scratch) / f"m{k}" for k in range(len(cfgs))]
            pack = build_pack(cfgs, outs, packed=len(cfgs) > 1)
            stepper = Stepper(pack, cuda_graph=False)
            x_all, y_all = pack.share.train_inputs(pack.data.x_train), pack.data.y_train

            def steps(n: int) -> Callable[[], None]:
                def run() -> None:
                    for _ in range(n):
                        stepper(*next_batch(pack, x_all, y_all))

                return run

            _timed(steps(WARMUP_STEPS), pack.device)
            n = MIN_STEPS
            seconds = _timed(steps(n), pack.device)
            while seconds < MIN_SECONDS and n < MAX_STEPS:
                n *= 2
                seconds = _timed(steps(n), pack.device)
            everyone = list(range(len(cfgs)))
            record_s = _timed(
                lambda: pack.recorder.record(1, 0.0, pack.share.rates(), everyone), pack.device
            )
            return n / seconds, record_s, pack.steps_per_epoch


def calibrate(packs: Sequence[Sequence[Config]], threads: int | None = None) -> Calibration:
    """Time one pack of every (kind, size) among `packs` on this machine, with `threads`
    intra-op threads (default: as set) as the executor's workers would have."""
    saved = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        found: dict[str, dict[int, Sequence[Config]]] = {}
        for cfgs in packs:
            found.setdefault(run_kind(cfgs[0]), {}).setdefault(len(cfgs), cfgs)
        speeds = {}
        for kind, by_size in found.items():
            measured = {size: measure_pack(cfgs) for size, cfgs in sorted(by_size.items())}
            first = next(iter(by_size.values()))[0]
            speeds[kind] = Speed(
                kind,
                kind_label(first),
                next(iter(measured.values()))[2],
                {size: m[0] for size, m in measured.items()},
                {size: m[1] for size, m in measured.items()},
            )
        device = next(iter(packs))[0].train.device if packs else "cpu"
        return Calibration(
            _device_type(device),
            _device_name(device),
            torch.get_num_threads(),
            torch.__version__.split("+")[0],
            speeds,
        )
    finally:
        torch.set_num_threads(saved)


def _device_type(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name).type


def _device_name(name: str) -> str:
    if _device_type(name) == "cuda":
        index = torch.device(name if name != "auto" else "cuda").index or 0
        return torch.cuda.get_device_name(index)
    return platform.processor() or platform.machine() or "cpu"
