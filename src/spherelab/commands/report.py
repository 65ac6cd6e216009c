"""`spherelab report SWEEP_DIR`: figures, boundaries and the self-contained report.html."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="figures and report.html of a sweep directory",
                       description="Write SWEEP_DIR/figures/, boundaries.json and report.html.")
    p.add_argument("sweep_dir")
    p.add_argument("--title", default=None)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from spherelab.report import write_report

    path = write_report(args.sweep_dir, title=args.title)
    print(f"report written to {path}")
    return 0
