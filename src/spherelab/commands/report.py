"""`spherelab report SWEEP_DIR`: figures, boundaries and the self-contained report.html.

With `--lens CONV_RUN`, SWEEP_DIR is the regime map of a fixed-ELR sweep and the command writes
the regime lens of the conventional run CONV_RUN into CONV_RUN/lens/ instead.
"""

from __future__ import annotations

import argparse

from spherelab.lock import hold
from spherelab.report.write import write_report
from spherelab.studies.lens import write_lens
from spherelab.sweep.run import relabel_sweep


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="figures and report.html of a sweep directory",
        description="Write SWEEP_DIR/figures/, boundaries.json and report.html; "
        "with --lens CONV_RUN, the regime lens of CONV_RUN over SWEEP_DIR.",
    )
    p.add_argument("sweep_dir")
    p.add_argument("--title", default=None)
    p.add_argument(
        "--lens",
        metavar="CONV_RUN",
        default=None,
        help="a conventional run directory to draw over SWEEP_DIR's regime map "
        "(writes CONV_RUN/lens/lens.html, lens.png/.svg, lens.json)",
    )
    p.add_argument(
        "--relabel",
        action="store_true",
        help="re-classify every finished run with the current classifier first "
        "(rewrites each summary.json and the regime column of summary.csv)",
    )
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    if args.lens:
        with hold(args.lens, "report", create=False):
            path = write_lens(args.lens, args.sweep_dir)
        print(f"lens written to {path}")
        return 0
    with hold(args.sweep_dir, "report", create=False):
        if args.relabel:
            relabel_sweep(args.sweep_dir)
        path = write_report(args.sweep_dir, title=args.title)
    print(f"report written to {path}")
    return 0
