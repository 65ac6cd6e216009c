"""`spherelab import-official PATH --model NAME --out RUN_DIR`: the paper's checkpoints as a
spherelab run directory (docs/paper_parity.md#networks-and-checkpoints)."""

from __future__ import annotations

import argparse
from typing import Any

from spherelab.config import parse_assignment
from spherelab.official import NETWORKS
from spherelab.official_runs import import_official


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-official",
        help="turn the paper's checkpoints into a run directory",
        description="Read an official checkpoint-<epoch>.pt (or a directory of them), loaded "
        "safely with weights_only, and write a spherelab run directory: config.json, "
        "metrics.jsonl (measured on --dataset), summary.json and checkpoints/.",
    )
    p.add_argument("path", help="a checkpoint-<epoch>.pt file or a directory of them")
    p.add_argument("--model", required=True, choices=list(NETWORKS), help="the official network")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--dataset", help="data set to measure on (default cifar10)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.seed=2 (repeatable)",
    )
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {"data.name": args.dataset} if args.dataset else {}
    overrides.update(parse_assignment(text) for text in args.set)
    out = import_official(args.path, args.model, args.out, overrides)
    print(f"run written to {out}")
    return 0
