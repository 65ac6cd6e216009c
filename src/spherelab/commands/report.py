"""`spherelab report SWEEP_DIR`: figures, boundaries and the self-contained report.html.

A run directory (e.g. from `import-official`) is reported as a sweep of one run: a one-row
summary.csv is written into it first.

With `--lens CONV_RUN`, SWEEP_DIR is the regime map of a fixed-ELR sweep and the command writes
the regime lens of the conventional run CONV_RUN into CONV_RUN/lens/ instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from spherelab.lock import hold
from spherelab.report.write import write_report
from spherelab.studies.lens import write_lens
from spherelab.sweep.files import write_run_summary
from spherelab.sweep.run import relabel_sweep


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="figures and report.html of a sweep directory",
        description="Write SWEEP_DIR/figures/, boundaries.json and report.html; "
        "with --lens CONV_RUN, the regime lens of CONV_RUN over SWEEP_DIR.",
    )
    p.add_argument("sweep_dir", help="a sweep directory, or a finished run directory")
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
    root = Path(args.sweep_dir)
    with hold(root, "report", create=False):
        if not (root / "summary.csv").exists() and (root / "summary.json").exists():
            write_run_summary(root)  # a lone run: reported as a sweep of one
        if args.relabel:
            relabel_sweep(args.sweep_dir)
        path = write_report(args.sweep_dir, title=args.title)
    print(f"report written to {path}")
    return 0
