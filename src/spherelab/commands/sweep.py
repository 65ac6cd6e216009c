"""`spherelab sweep`: run an ELR sweep (grid, executors, refinement) and print its summary."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spherelab.chaos import LyapunovOptions
from spherelab.commands.progress import SweepDisplay
from spherelab.commands.train import PRESET_HELP
from spherelab.config import (
    PRESET_ELRS,
    PRESETS,
    ConfigError,
    parse_assignment,
    preset_head_bias,
    preset_overrides,
)
from spherelab.report import write_report
from spherelab.runtime import is_import_spec
from spherelab.sweep.calibration import read_calibration, write_calibration
from spherelab.sweep.executors import EXECUTORS
from spherelab.sweep.files import read_summary
from spherelab.sweep.lyapunov import run_lyapunov_sweep
from spherelab.sweep.packing import AUTO
from spherelab.sweep.plan import describe, plan_sweep
from spherelab.sweep.run import boundaries_by_group, run_sweep
from spherelab.sweep.spec import SweepSpec, expand, load_spec, parse_elrs, parse_seeds
from spherelab.train.build import build_config_model

# CLI flag -> executor option (passed only when given).
EXECUTOR_FLAGS = {
    "array_parallelism": "array_parallelism",
    "cluster": "cluster",
    "gpus": "gpus",
    "gpus_per_run": "gpus_per_run",
    "max_timeouts": "max_timeouts",
    "partition": "partition",
    "signal_delay_s": "signal_delay_s",
    "timeout_min": "timeout_min",
}


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="run an ELR sweep and summarize its regimes",
        description="Train one run per (ELR, seed, axis values) point into OUT/runs/, write "
        "OUT/summary.csv and OUT/report.html. Rerunning skips finished runs.",
    )
    p.add_argument("--spec", type=Path, help="sweep spec TOML (flags below override it)")
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help=PRESET_HELP + "; without --elrs, the preset's grid (paper: Figure 1's 8 ELRs)",
    )
    p.add_argument(
        "--model",
        help="model name (default mlp_si), or a factory module:attr (e.g. my_pkg.nets:make_net; "
        "its keyword arguments: --set model.kwargs.KEY=VALUE)",
    )
    p.add_argument("--dataset", help="dataset name (default mnist1d), or a loader module:attr")
    p.add_argument("--elrs", help="comma list (1e-4,1e-3) or logspace:LO:HI:N")
    p.add_argument("--seeds", help="comma list of seeds (default 0)")
    p.add_argument("--epochs", type=int, help="epochs per run")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fixed override for every run, e.g. data.batch_size=64 (repeatable)",
    )
    p.add_argument(
        "--deterministic",
        action="store_true",
        help="every run gives the same numbers on every executor: one thread, "
        "deterministic kernels, no packing (train.deterministic=true)",
    )
    p.add_argument(
        "--log",
        choices=["tensorboard"],
        help="also write every run's records as TensorBoard scalars (RUN/tensorboard/)",
    )
    p.add_argument("--out", required=True, type=Path, help="sweep directory")
    p.add_argument("--executor", default="inline", choices=list(EXECUTORS))
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="parallel jobs (local: worker processes; submitit: the array throttle)",
    )
    p.add_argument(
        "--refine",
        type=int,
        default=0,
        metavar="K",
        help="rounds of ELRs added inside each regime boundary interval",
    )
    p.add_argument(
        "--pack",
        type=pack_arg,
        default="auto",
        metavar="K|auto",
        help="runs per job and ensemble module, on every executor; auto (default): up to 16, "
        "trained as one module where that is faster on the device the job runs on (any model "
        "on CUDA, mlp_si on a CPU); 1: never pack",
    )
    p.add_argument(
        "--gpus",
        metavar="LIST",
        help="local: one worker per listed GPU, pinned to it, e.g. 0,1,2,3 (replaces --workers; "
        "list a GPU twice for two workers on it)",
    )
    p.add_argument("--array-parallelism", type=int, help="submitit: Slurm array throttle")
    p.add_argument(
        "--cluster",
        choices=["slurm", "local", "debug"],
        help="submitit: where the jobs run (default: Slurm where installed, else this machine)",
    )
    p.add_argument(
        "--gpus-per-run", type=float, help="ray: GPUs (or a fraction) per job; submitit: GPUs"
    )
    p.add_argument("--partition", help="submitit: Slurm partition")
    p.add_argument(
        "--timeout-min",
        type=int,
        help="submitit: time limit per job (minutes); a job out of time requeues itself",
    )
    p.add_argument(
        "--max-timeouts",
        type=int,
        help="submitit: requeues after reaching the time limit (default 3; preemptions are "
        "not counted)",
    )
    p.add_argument(
        "--signal-delay-s",
        type=int,
        help="submitit: seconds before the time limit when a job stops its pack at the next "
        "epoch end to requeue (default 90; make it longer than one epoch)",
    )
    p.add_argument("--no-report", action="store_true", help="skip report.html")
    p.add_argument(
        "--plan",
        action="store_true",
        help="print the runs, packs, jobs and an estimate of time and device-hours; train "
        "nothing and write nothing to --out",
    )
    p.add_argument(
        "--calibration",
        type=Path,
        metavar="FILE",
        help="--plan: speeds measured on the target machine (from --calibration-out) "
        "instead of timing a few steps here",
    )
    p.add_argument(
        "--calibration-out",
        type=Path,
        metavar="FILE",
        help="--plan: also write the speeds timed here to FILE (JSON)",
    )
    p.add_argument(
        "--lyapunov",
        action="store_true",
        help="after training, measure each run's Lyapunov exponent from its final checkpoint "
        "(summary.csv columns lyapunov, lyapunov_err, step_angle_mean; docs/chaos.md); with "
        "--refine K, also K rounds of bisection of the ELR where λ turns positive",
    )
    p.add_argument(
        "--lyapunov-steps", type=int, default=200, help="measured steps per run (--lyapunov)"
    )
    p.set_defaults(handler=handle)


def pack_arg(text: str) -> int | str:
    """--pack: a number of runs per ensemble module, or 'auto'."""
    if text == AUTO:
        return AUTO
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--pack {text!r} is neither a number of runs nor 'auto'; e.g. --pack 8"
        ) from None


def spec_from_args(args: argparse.Namespace) -> SweepSpec:
    """The spec file (if any) with the command-line fields on top."""
    sets = dict(parse_assignment(text) for text in args.set)
    if args.deterministic:
        sets["train.deterministic"] = True
    if args.log:
        sets["train.log"] = args.log
    fields: dict[str, Any] = {
        k: getattr(args, k) for k in ("model", "dataset", "epochs") if getattr(args, k) is not None
    }
    if args.elrs is not None:
        fields["elrs"] = parse_elrs(args.elrs)
    if args.seeds is not None:
        fields["seeds"] = parse_seeds(args.seeds)
    if args.spec is not None:
        if args.preset is not None:
            raise ConfigError(
                "--preset and --spec do not combine; put the settings in the spec file, or "
                "use --preset with flags and --set"
            )
        spec = load_spec(args.spec)
        return dataclasses.replace(spec, overrides={**spec.overrides, **sets}, **fields)
    if args.preset is not None:
        fields, sets = _with_preset(args.preset, fields, sets)
    if "elrs" not in fields:
        raise ConfigError("no ELRs: pass --elrs 1e-4,1e-3 (or logspace:1e-4:1:8) or --spec FILE")
    return SweepSpec(overrides=sets, **fields)


def _with_preset(
    name: str, fields: dict[str, Any], sets: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A preset's values under the command line's: the reserved keys become spec fields (the
    preset's seed is the one seed, its grid the ELRs), the rest fixed overrides."""
    base = preset_overrides(name)
    given = {
        "model": base.pop("model.name"),
        "dataset": base.pop("data.name"),
        "epochs": base.pop("train.epochs"),
        "seeds": (base.pop("train.seed"),),
        "elrs": PRESET_ELRS[name],
    }
    fields = {**given, **fields}
    sets = {**base, **sets}
    if "model.head_bias" not in sets and not is_import_spec(fields["model"]):
        sets["model.head_bias"] = preset_head_bias(name, fields["model"])
    return fields, sets


def format_table(rows: Sequence[dict[str, str]], axis_keys: Sequence[str]) -> str:
    header = ["elr", "seed", *axis_keys, "regime", "train loss", "test acc"]
    body = [
        [
            _num(r["elr"]),
            r["seed"],
            *(r[k] for k in axis_keys),
            r["regime"] or r["status"],
            _num(r["train_loss"]),
            _num(r["test_acc"]),
        ]
        for r in rows
    ]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *body)]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip()
        for line in [header, *body]
    )


def _num(text: str) -> str:
    try:
        return f"{float(text):.4g}"
    except ValueError:
        return text or "-"


def _print_boundaries(rows: Sequence[dict[str, str]], axis_keys: Sequence[str]) -> None:
    for key, boundaries in boundaries_by_group(rows, axis_keys).items():
        where = " ".join(f"{k}={v}" for k, v in zip(axis_keys, key))
        print(
            f"boundaries{' (' + where + ')' if where else ''}:"
            + ("" if boundaries else " none (a single regime)")
        )
        for b in boundaries:
            print(f"  {b.below} | {b.above}: ELR in [{b.lo:.3g}, {b.hi:.3g}], mid {b.mid:.3g}")


def handle(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    if is_import_spec(spec.model):  # a bad factory or a non-SI model: exit 2 before any run
        build_config_model(expand(spec)[0].config)
    options = {
        option: getattr(args, flag)
        for flag, option in EXECUTOR_FLAGS.items()
        if getattr(args, flag) is not None
    }
    if args.plan or args.calibration or args.calibration_out:
        return show_plan(args, spec, options)
    logger = logging.getLogger("spherelab")
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)  # one progress line per finished run
    with SweepDisplay() as display:
        kwargs: dict[str, Any] = dict(
            executor=args.executor,
            workers=args.workers,
            refine=args.refine,
            pack=args.pack,
            executor_options=options,
            report=not args.no_report and not args.lyapunov,
            # on a terminal the display's one line holds it all; a log keeps a line per run
            progress=not display.tty or getattr(args, "verbose", False),
            train_progress=display.train,
            sweep_progress=display.sweep,
        )
        if not args.lyapunov:
            return show_results(run_sweep(spec, args.out, **kwargs), spec, args.out)
        opts = LyapunovOptions(steps=args.lyapunov_steps)
        summary = run_lyapunov_sweep(spec, args.out, opts=opts, **kwargs)
    if not args.no_report:
        write_report(args.out)
    return show_results(summary, spec, args.out)


def show_plan(args: argparse.Namespace, spec: SweepSpec, options: dict[str, Any]) -> int:
    """--plan: print what the sweep would do and its estimate; train and write nothing."""
    if not args.plan:
        raise ConfigError("--calibration and --calibration-out go with --plan; add --plan")
    if args.calibration and args.calibration_out:
        raise ConfigError(
            "--calibration reads speeds and --calibration-out writes the ones timed here; "
            "pass one of them"
        )
    if not args.calibration:
        print(
            "timing a few training steps of one pack per kind here "
            "(--calibration FILE uses speeds measured elsewhere)",
            file=sys.stderr,
        )
    plan = plan_sweep(
        spec,
        args.out,
        executor=args.executor,
        workers=args.workers,
        pack=args.pack,
        executor_options=options,
        calibration=read_calibration(args.calibration) if args.calibration else None,
    )
    print("\n".join(describe(plan)))
    if args.refine:
        print(f"refinement: --refine {args.refine} adds runs after the grid; they are not planned")
    if args.calibration_out and plan.calibration is not None:
        print(f"calibration: {write_calibration(args.calibration_out, plan.calibration)}")
    return 0


def show_results(summary: Path, spec: SweepSpec, out: Path) -> int:
    """Print the runs table, the boundaries and where the files are; 1 if a run failed."""
    rows = read_summary(summary)
    print(format_table(rows, list(spec.axes)))
    _print_boundaries(rows, list(spec.axes))
    print(f"summary: {summary}")
    report = out / "report.html"
    if report.exists():
        print(f"report:  {report}")
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        print(f"{len(failed)} run(s) failed; see the error column of {summary}")
    return 1 if failed else 0
