"""`spherelab train`: one run at a fixed ELR (or conventional SGD) into an output directory."""

from __future__ import annotations

import argparse
import json
from typing import Any

from spherelab.commands.progress import progress_bar
from spherelab.config import PRESETS, Config, apply_overrides, layered_config, parse_assignment
from spherelab.diagnose import hooks_for
from spherelab.train import train_run
from spherelab.train.validation import validate_config

PRESET_HELP = (
    "start from a named set of defaults under --config, flags and --set; paper: the paper's "
    "run script (ConvNet-SI w32, CIFAR-10, seed 1, head seed 228 with its bias, fixed "
    "normalization, batch 128, 1000 epochs, a record every epoch; docs/paper_parity.md)"
)

# CLI flag -> dotted config key
FLAGS = {
    "model": "model.name",
    "dataset": "data.name",
    "elr": "optim.elr",
    "epochs": "train.epochs",
    "steps": "train.steps",
    "seed": "train.seed",
    "batch_size": "data.batch_size",
    "device": "train.device",
    "dtype": "train.dtype",
    "deterministic": "train.deterministic",
    "log": "train.log",
}


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared by the commands that build one run config."""
    p.add_argument(
        "--model",
        help="model name, e.g. mlp_si, convnet_si, resnet18_si, or a factory module:attr "
        "(e.g. my_pkg.nets:make_net; its keyword arguments: --set model.kwargs.KEY=VALUE)",
    )
    p.add_argument(
        "--dataset",
        help="mnist1d, fashion_mnist, cifar10, cifar100, synthetic, npz:PATH, or a loader "
        "module:attr (e.g. my_pkg.data:load)",
    )
    p.add_argument("--elr", type=float, help="effective learning rate on the sphere")
    p.add_argument("--epochs", type=int)
    p.add_argument("--steps", type=int, help="train for this many steps instead of epochs")
    p.add_argument("--seed", type=int)
    p.add_argument("--batch-size", type=int, help="0 = full-batch gradient descent")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--dtype", choices=["float32", "float64"])
    p.add_argument(
        "--deterministic",
        action="store_true",
        default=None,
        help="the same numbers inline, in a sweep and on any executor: one thread, "
        "deterministic kernels, no packing (train.deterministic)",
    )
    p.add_argument(
        "--log", choices=["tensorboard"], help="also write records as TensorBoard scalars"
    )
    p.add_argument("--config", help="TOML file with [model] [data] [optim] [train] tables")
    p.add_argument("--preset", choices=sorted(PRESETS), help=PRESET_HELP)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set optim.momentum=0.9 (repeatable)",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    """The preset (if any), then the TOML file (if any), then flags and --set on top."""
    overrides: dict[str, Any] = {
        key: getattr(args, flag)
        for flag, key in FLAGS.items()
        if getattr(args, flag, None) is not None
    }
    overrides.update(parse_assignment(text) for text in args.set)
    return validate_config(layered_config(args.preset, args.config, overrides))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train one run at a fixed ELR",
        description="Train one run and write config.json, metrics.jsonl, "
        "summary.json and checkpoints/ into --out.",
    )
    add_run_arguments(p)
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue an unfinished run in --out")
    p.add_argument(
        "--diagnose-every",
        type=int,
        metavar="N",
        help="online landscape diagnostics (grad, angles, curvature) at every N-th "
        "log-spaced record, into diagnostics.jsonl",
    )
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.diagnose_every:
        cfg = apply_overrides(
            cfg,
            {
                "train.diagnose": "grad,angles,curvature",
                "train.diagnose_every": args.diagnose_every,
            },
        )
    progress = progress_bar() or True
    summary = train_run(cfg, args.out, resume=args.resume, progress=progress, hooks=hooks_for(cfg))
    keys = ("status", "regime", "epoch", "train_loss", "train_acc", "test_acc", "eff_grad_norm")
    print(json.dumps({k: summary.get(k) for k in keys}, indent=1))
    if summary.get("regime_note"):
        print(f"note: {summary['regime_note']}")
    print(f"run written to {args.out}")
    return 0
