"""`spherelab demo`: the main job — map the three regimes of an MLP-SI on MNIST-1D and report."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from spherelab.commands.progress import pack_progress
from spherelab.commands.sweep import pack_arg, show_results
from spherelab.diagnose import LAST, DiagnoseOptions, diagnose_sweep
from spherelab.lock import hold
from spherelab.report import write_report
from spherelab.sweep.run import run_sweep
from spherelab.sweep.spec import SweepSpec, parse_elrs

# The demo sweep (MNIST-1D is procedural, so it runs offline). Nine ELRs from 1e-4 to 1 cover
# convergence (<= ~1e-3), chaotic equilibrium (~1e-2) and divergence (>= ~0.1) for this model.
DEMO_ELRS = "logspace:1e-4:1:9"
DEMO_OVERRIDES = {"model.width": 128, "model.depth": 3, "data.batch_size": 128, "train.records": 14}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="sweep mlp_si on MNIST-1D over 9 ELRs and write the report",
        description="The main job: an ELR sweep of mlp_si on MNIST-1D that shows "
        "all three regimes, with figures and report.html.",
    )
    p.add_argument("--out", type=Path, default=Path("demo_out"))
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--elrs", default=DEMO_ELRS)
    p.add_argument(
        "--pack", type=pack_arg, default=9, metavar="K|auto", help="runs per ensemble module"
    )
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    logger = logging.getLogger("spherelab")
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    spec = SweepSpec(
        elrs=parse_elrs(args.elrs),
        model="mlp_si",
        dataset="mnist1d",
        epochs=args.epochs,
        overrides=dict(DEMO_OVERRIDES),
        name="demo",
    )
    start = time.perf_counter()
    with hold(args.out, "demo"):
        summary = run_sweep(
            spec,
            args.out,
            executor="inline",
            pack=args.pack,
            report=False,
            train_progress=pack_progress(),
        )
        # Curvature at each run's final point: the report's effective sharpness vs 2/ELR figure.
        diagnose_sweep(
            args.out,
            DiagnoseOptions(what=("curvature",), samples=512, probes=4, top_k=3, iters=12),
            LAST,
        )
        write_report(args.out)
    code = show_results(summary, spec, args.out)
    print(f"demo finished in {time.perf_counter() - start:.0f} s; open {args.out / 'report.html'}")
    return code
