"""A single run through the one engine (the pack of one) against an older spherelab's own
single-run engine, side by side: same config, same machine, alternating fresh processes.

The older code is any git revision of this repository, checked out into a temporary worktree
(default: c9d0781, the last commit with a separate single-run engine). Each process trains one
run with `train_run` and reports the wall time of every epoch through the progress callback;
epochs that hold a record (evaluation, checkpoint) are left out, so the figure is the loop's
own cost per epoch. Reported: the median epoch time of each side over all repeats, and their
ratio (new / old; the target is <= 1.05), plus the median end-to-end train_run time.

    python benchmarks/bench_k1.py --repeats 5 [--rev c9d0781 | --old-src DIR] [--device cuda]

`--old-src` names an older `src/` directly (e.g. `git archive c9d0781 src | tar -x -C DIR`),
for machines without the repository's history. On CUDA the convnet trains on 12800 samples
(100 steps per epoch), so an epoch is long enough to time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from spherelab.train.checkpoints import record_steps

REPO = Path(__file__).resolve().parents[1]

# One child process: train one run, print {"epochs": [s, ...], "total": s} as JSON.
CHILD = r"""
import json, sys, tempfile, time
import torch
torch.set_num_threads(int(sys.argv[2]))
from spherelab.config import Config, apply_overrides
import spherelab
try:
    from spherelab.train import train_run
except ImportError:
    from spherelab.engine import train_run
over = json.loads(sys.argv[1])
cfg = apply_overrides(Config(), over)
marks = []
def progress(info):
    marks.append((info["step"], info["elapsed"]))
with tempfile.TemporaryDirectory() as tmp:
    t0 = time.perf_counter()
    summary = train_run(cfg, tmp + "/run", progress=progress)
    total = time.perf_counter() - t0
print(json.dumps({"marks": marks, "total": total, "file": spherelab.__file__}))
"""

CONFIGS = {
    "mlp_si MNIST-1D (width 256, batch 128)": {
        "model.name": "mlp_si",
        "data.name": "mnist1d",
        "data.batch_size": 128,
        "train.epochs": 30,
    },
    "convnet_si c=32 synthetic 3x32x32 (batch 128)": {
        "model.name": "convnet_si",
        "model.width": 32,
        "data.name": "synthetic:3x32x32:1280:128",
        "data.batch_size": 128,
        "train.epochs": 8,
    },
}
COMMON = {"train.records": 3, "train.checkpoints": "none"}
CUDA_DATA = {"convnet_si": "synthetic:3x32x32:12800:1280"}  # 100 steps per epoch on CUDA


def worktree(rev: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(where), rev],
                   check=True, capture_output=True)  # fmt: skip
    return where / "src"


def child(src: Path, over: dict, threads: int) -> dict:
    path = os.pathsep.join(
        [str(src), os.environ.get("PYTHONPATH", "")]
    )  # src/ first: its spherelab
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(over), str(threads)],
        env=os.environ | {"PYTHONPATH": path},
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise RuntimeError(f"the {src} run failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not Path(result["file"]).is_relative_to(src):  # the side really ran its own code
        raise RuntimeError(f"expected spherelab from {src}, the child imported {result['file']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="c9d0781", help="the older revision to compare with")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--old-src", type=Path, help="an older src/ to use instead of --rev")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old_src = args.old_src.resolve() if args.old_src else worktree(args.rev, Path(tmp) / "old")
        try:
            sides = {"old": old_src, "new": REPO / "src"}
            print(f"old = {args.old_src or args.rev}, new = working tree; {args.device}, "
                  f"{args.repeats} repeats, {args.threads} threads, medians")  # fmt: skip
            for name, over in CONFIGS.items():
                cfg = COMMON | over | {"train.device": args.device}
                if args.device.startswith("cuda") and over["model.name"] in CUDA_DATA:
                    cfg["data.name"] = CUDA_DATA[over["model.name"]]
                per_epoch: dict[str, list[float]] = {"old": [], "new": []}
                totals: dict[str, list[float]] = {"old": [], "new": []}
                spe = None
                for r in range(args.repeats):
                    for side, src in sides.items() if r % 2 == 0 else reversed(sides.items()):
                        result = child(src, cfg, args.threads)
                        spe = spe or _steps_per_epoch(result)
                        per_epoch[side] += _without_records(result, spe, cfg)
                        totals[side].append(result["total"])
                    print(f"  {name}: repeat {r + 1}/{args.repeats}", file=sys.stderr, flush=True)
                med = {s: statistics.median(v) for s, v in per_epoch.items()}
                tot = {s: statistics.median(v) for s, v in totals.items()}
                print(f"{name}:")
                print(f"  s/epoch (no records)  old {med['old']:.4f}  new {med['new']:.4f}  "
                      f"new/old {med['new'] / med['old']:.3f}x (target <= 1.05)")  # fmt: skip
                print(f"  train_run total (s)   old {tot['old']:.2f}  new {tot['new']:.2f}  "
                      f"new/old {tot['new'] / tot['old']:.3f}x")  # fmt: skip
        finally:
            if not args.old_src:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                                str(Path(tmp) / "old")], check=False)  # fmt: skip


def _steps_per_epoch(result: dict) -> int:
    steps = [s for s, _ in result["marks"]]
    return min(b - a for a, b in zip(steps, steps[1:]) if b > a)


def _without_records(result: dict, spe: int, cfg: dict) -> list[float]:
    """Epoch times of the epochs that hold no record step (records fall on epoch ends, so an
    epoch whose end is a record step is left out)."""
    total_steps = cfg["train.epochs"] * spe
    record_at = set(record_steps(total_steps, spe, cfg["train.records"]))
    marks = result["marks"]
    out = []
    for (s0, t0), (s1, t1) in zip(marks, marks[1:]):
        if s1 - s0 == spe and s1 not in record_at:
            out.append(t1 - t0)
    return out


if __name__ == "__main__":
    main()
