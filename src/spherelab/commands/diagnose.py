"""`spherelab diagnose RUN_DIR`: landscape diagnostics at a run's checkpoints."""

from __future__ import annotations

import argparse
from pathlib import Path

from spherelab.chaos import LyapunovOptions, lyapunov_run, lyapunov_sweep
from spherelab.diagnose import (
    LAST,
    DiagnoseOptions,
    diagnose_run,
    diagnose_sweep,
    parse_what,
)
from spherelab.lock import hold
from spherelab.report import write_report


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diagnose",
        help="gradients, angles and curvature at a run's checkpoints",
        description="Write RUN_DIR/diagnostics.jsonl: gradient statistics, "
        "angular updates and curvature (trace, top eigenvalues, sharpness). Given "
        "a sweep directory, diagnose each run and redraw the report (it gains the "
        "effective sharpness vs 2/ELR figure).",
    )
    p.add_argument("run_dir", help="a run directory, or a sweep directory")
    p.add_argument(
        "--what",
        default="grad,angles,curvature",
        help="comma list of grad,angles,curvature,fisher,lyapunov (fisher: the paper's Fisher "
        "trace and top eigenvalues; lyapunov: the Lyapunov exponent from the final checkpoint, "
        "into summary.json and summary.csv, docs/chaos.md)",
    )
    p.add_argument(
        "--lyapunov-steps", type=int, default=200, help="measured steps (--what lyapunov)"
    )
    p.add_argument(
        "--lyapunov-method", default="tangent", help="tangent (reference) | twin (--what lyapunov)"
    )
    p.add_argument(
        "--epochs",
        default="",
        help="comma list of epochs (nearest checkpoints), or 'last'; default all",
    )
    p.add_argument("--samples", type=int, default=1024, help="training samples for the landscape")
    p.add_argument("--probes", type=int, default=8, help="Hutchinson (and Fisher) probes")
    p.add_argument("--top-k", type=int, default=5, help="Lanczos eigenvalues (Hessian, Fisher)")
    p.add_argument("--iters", type=int, default=20, help="Lanczos iterations")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    items = [t.strip() for t in args.what.split(",") if t.strip()]
    if "lyapunov" in items:
        _lyapunov(args)
        args.what = ",".join(t for t in items if t != "lyapunov")
        if not args.what:
            return 0
    try:
        epochs = (
            list(LAST)
            if args.epochs.strip() == "last"
            else [float(e) for e in args.epochs.split(",") if e.strip()]
        )
    except ValueError:
        raise ValueError(
            f"--epochs {args.epochs!r} is not a comma list of numbers or 'last'"
        ) from None
    opts = DiagnoseOptions(
        what=parse_what(args.what),
        samples=args.samples,
        probes=args.probes,
        top_k=args.top_k,
        iters=args.iters,
    )
    with hold(args.run_dir, "diagnose", create=False):
        if (Path(args.run_dir) / "summary.csv").exists():
            paths = diagnose_sweep(args.run_dir, opts, epochs)
            write_report(args.run_dir)  # it gains the effective sharpness vs 2/ELR figure
            where = Path(args.run_dir) / "report.html"
            print(f"diagnosed {len(paths)} runs; report redrawn in {where}")
            return 0
        path = diagnose_run(args.run_dir, opts, epochs)
    print(f"diagnostics written to {path}")
    return 0


def _lyapunov(args: argparse.Namespace) -> None:
    opts = LyapunovOptions(method=args.lyapunov_method, steps=args.lyapunov_steps)
    with hold(args.run_dir, "diagnose", create=False):
        if (Path(args.run_dir) / "summary.csv").exists():
            path = lyapunov_sweep(args.run_dir, opts)
            write_report(args.run_dir)  # it gains the λ figure
            print(f"lyapunov columns written to {path}; report redrawn")
            return
        s = lyapunov_run(args.run_dir, opts)
    print(
        f"lyapunov {s['lyapunov']:.4g} +- {s['lyapunov_err']:.2g} per step, mean step angle "
        f"{s['step_angle_mean']:.3g} rad; written to {Path(args.run_dir) / 'summary.json'}"
    )
