"""Executors side by side: one 16-run MNIST-1D sweep (mlp_si width 128, 8 ELRs x 2 seeds)
timed end to end as `spherelab sweep` commands, each in a fresh process and a fresh --out:

- `--executor local --workers 2` with packs (`--pack 8`: two packs, one per worker);
- the same without packs (`--pack 1`: 16 single runs, two at a time);
- `--executor inline` with packs (`--pack auto`: one module of 16 on a CPU).

Each repeat runs the configurations in a rotated order; reported are the median wall time of
each, its ratio to the local sweep without packs, and whether every configuration labelled the
runs alike (float32 packs sum in another order, so a run on a regime boundary may differ). A
configuration that this spherelab refuses (e.g. packs on the local executor before they were
supported) is reported with the command's one-line error instead of a time.

    python benchmarks/bench_executors.py [--epochs 200] [--repeats 1] [--json FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = {
    "local, 2 workers, packs of 8": ["--executor", "local", "--workers", "2", "--pack", "8"],
    "local, 2 workers, no packs": ["--executor", "local", "--workers", "2", "--pack", "1"],
    "inline, packs (auto: 16)": ["--executor", "inline", "--pack", "auto"],
}
BASELINE = "local, 2 workers, no packs"


def sweep_args(epochs: int) -> list[str]:
    return [
        "sweep", "--model", "mlp_si", "--dataset", "mnist1d",
        "--elrs", "logspace:1e-4:1:8", "--seeds", "0,1", "--epochs", str(epochs),
        "--set", "model.width=128", "--no-report",
    ]  # fmt: skip


def run_one(flags: list[str], epochs: int, out: Path) -> dict:
    """One sweep command: its wall time and labels, or its error line."""
    cmd = [sys.executable, "-m", "spherelab.cli", *sweep_args(epochs), "--out", str(out), *flags]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    wall = time.perf_counter() - start
    summary = out / "summary.csv"
    if done.returncode not in (0, 1) or not summary.exists():  # 1: some run failed (counted)
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        return {"error": lines[-1]}
    with summary.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    labels = {(r["elr"], r["seed"]): r["regime"] or r["status"] for r in rows}
    return {"wall_s": wall, "labels": labels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    names = list(CONFIGS)
    with tempfile.TemporaryDirectory(prefix="bench-executors-") as tmp:
        for repeat in range(args.repeats):
            order = names[repeat % len(names) :] + names[: repeat % len(names)]
            for name in order:
                if results[name] and "error" in results[name][0]:
                    continue  # refused once: refused every time
                out = Path(tmp) / f"r{repeat}-{names.index(name)}"
                results[name].append(run_one(CONFIGS[name], args.epochs, out))
                shown = results[name][-1].get("wall_s", results[name][-1].get("error"))
                print(f"repeat {repeat + 1} {name}: {shown}", file=sys.stderr, flush=True)
    report = summarize(results, args)
    print(report["table"])
    if args.json:
        args.json.write_text(json.dumps({k: v for k, v in report.items() if k != "table"}))


def summarize(results: dict[str, list[dict]], args: argparse.Namespace) -> dict:
    medians = {
        name: statistics.median(r["wall_s"] for r in runs)
        for name, runs in results.items()
        if runs and "error" not in runs[0]
    }
    base = medians.get(BASELINE)
    lines = [
        f"16-run MNIST-1D sweep (mlp_si w128, 8 ELRs x 2 seeds, {args.epochs} epochs), "
        f"{os.cpu_count()} cores, median of {args.repeats}",
        "| configuration | wall (s) | speed-up vs local without packs |",
        "|---|---|---|",
    ]
    for name, runs in results.items():
        if name in medians:
            ratio = f"{base / medians[name]:.2f}x" if base else "-"
            lines.append(f"| {name} | {medians[name]:.1f} | {ratio} |")
        else:
            error = runs[0]["error"] if runs else "not run"
            lines.append(f"| {name} | not available: {error} | - |")
    labels = [r["labels"] for runs in results.values() for r in runs if "labels" in r]
    if labels:
        differ = {key for key in labels[0] if len({str(lab.get(key)) for lab in labels}) > 1}
        lines.append(f"runs labelled differently across configurations: {len(differ)} of 16")
    return {"table": "\n".join(lines), "median_wall_s": medians, "epochs": args.epochs}


if __name__ == "__main__":
    main()
