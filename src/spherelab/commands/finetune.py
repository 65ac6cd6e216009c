"""`spherelab finetune`: pre-train at ELRs p, fine-tune each at ELRs f, compare with scratch."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from spherelab.config import parse_assignment
from spherelab.io import read_json
from spherelab.lock import hold
from spherelab.studies.finetune import run_finetune
from spherelab.sweep.spec import parse_elrs, parse_seeds


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="pre-train x fine-tune ELR grid from shared pre-training runs",
        description="One pre-training run per pre-train ELR; every fine-tune branches from its "
        "last checkpoint. Writes OUT/summary.csv, finetune.json, figures/ and report.html, and "
        "compares with the best regime-1 run from scratch with the same total epochs.",
    )
    p.add_argument("--model", default="convnet_si", help="model name (default convnet_si)")
    p.add_argument("--dataset", default="fashion_mnist", help="dataset (default fashion_mnist)")
    p.add_argument("--pretrain-elrs", required=True, help="comma list or logspace:LO:HI:N")
    p.add_argument("--finetune-elrs", required=True, help="comma list or logspace:LO:HI:N")
    p.add_argument("--pre-epochs", type=int, required=True, help="pre-training epochs")
    p.add_argument("--ft-epochs", type=int, required=True, help="fine-tuning epochs")
    p.add_argument("--seeds", default="0", help="comma list of seeds (default 0)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override for every run, e.g. data.train_subset=2000 (repeatable)",
    )
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    pretrain, finetune = parse_elrs(args.pretrain_elrs), parse_elrs(args.finetune_elrs)
    overrides, seeds = dict(parse_assignment(t) for t in args.set), parse_seeds(args.seeds)
    with hold(args.out, "finetune"):
        path = run_finetune(
            args.model,
            args.dataset,
            pretrain,
            finetune,
            args.pre_epochs,
            args.ft_epochs,
            args.out,
            overrides=overrides,
            seeds=seeds,
        )
    result = read_json(path.parent / "finetune.json")
    keys = (
        "best_pretrain_elr",
        "best_pretrain_regime",
        "best_finetune_elr",
        "best_finetune_test_acc",
        "scratch_baseline",
        "gain_over_scratch",
    )
    print(json.dumps({k: result.get(k) for k in keys}, indent=1))
    print(f"fine-tune grid written to {path.parent} (report.html)")
    return 0
