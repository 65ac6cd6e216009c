"""Overhead of spherelab.monitor.RegimeMonitor on a user's own training loop.

The loop is the plain PyTorch one a user writes: convnet_si (width 32) on a synthetic
CIFAR-shaped batch (3x32x32, batch 128), conventional SGD (lr 0.1, momentum 0.9, weight decay
5e-4). Two variants, interleaved within each repeat: the bare step (forward, backward,
optimizer.step) and the same step followed by ``monitor.step(loss)`` with one record per
``--record-every`` steps (default 50: the record's host read and metrics.jsonl row included).
The MEDIAN over repeats of the seconds per step is reported, and the ratio monitored / bare
(the target: <= 1.03), and the time of ``monitor.step`` alone as a fraction of the bare step
(robust to the load of other processes on a shared machine).

    python benchmarks/bench_monitor.py --steps 20 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn import functional as F

from spherelab.models import build_model
from spherelab.monitor import RegimeMonitor

MONITOR_SECONDS: list[float] = []  # the monitor's own share of each monitored step


def make_step(monitor_dir: Path | None, record_every: int) -> Callable[[], None]:
    torch.manual_seed(0)
    model = build_model("convnet_si", width=32)
    opt = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad],
        lr=0.1,
        momentum=0.9,
        weight_decay=5e-4,
    )
    x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
    monitor = (
        RegimeMonitor(model, opt, monitor_dir, steps_per_epoch=391, record_every=record_every)
        if monitor_dir is not None
        else None
    )

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if monitor is not None:
            t0 = time.perf_counter()
            monitor.step(loss)
            MONITOR_SECONDS.append(time.perf_counter() - t0)

    return step


def seconds_per_step(step: Callable[[], None], steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps",
        type=int,
        default=50,
        help="steps per timing (a multiple of record-every keeps records in)",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--record-every", type=int, default=50)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        variants = {
            "bare": make_step(None, args.record_every),
            "monitored": make_step(Path(tmp) / "run", args.record_every),
        }
        for step in variants.values():  # warm-up: allocator, first-call costs
            for _ in range(3):
                step()
        MONITOR_SECONDS.clear()
        times: dict[str, list[float]] = {name: [] for name in variants}
        for r in range(args.repeats):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for name in order:
                times[name].append(seconds_per_step(variants[name], args.steps))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    ratios = [m / b for m, b in zip(times["monitored"], times["bare"])]
    print(f"threads {torch.get_num_threads()}, {args.steps} steps x {args.repeats} repeats, "
          f"a record every {args.record_every} steps")  # fmt: skip
    for name, value in med.items():
        print(f"{name:>10}: {value * 1e3:8.2f} ms/step (median)")
    print(f"ratio monitored / bare: {med['monitored'] / med['bare']:.4f} (median of per-repeat "
          f"ratios {statistics.median(ratios):.4f}; target <= 1.03)")  # fmt: skip
    # The monitor's own time, timed around monitor.step alone: immune to the load of other
    # processes that makes the two variants' step times differ by more than the monitor costs.
    own = sum(MONITOR_SECONDS) / len(MONITOR_SECONDS)
    print(f"monitor.step alone: {own * 1e3:.3f} ms/step (mean, records included) = "
          f"{own / med['bare']:.4f} of a bare step")  # fmt: skip


if __name__ == "__main__":
    main()
