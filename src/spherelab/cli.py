"""The `spherelab` command: a thin dispatcher over the library (one module per subcommand)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from spherelab import __version__
from spherelab.io import os_error_line

COMMANDS = ("train", "sweep", "report", "diagnose", "toy", "finetune", "demo", "import-official")
# What to do after Ctrl-C: only `train` has --resume; the grid commands skip finished runs.
RESUME_HINT = "rerun the same command"
RESUME_HINTS = {
    "train": "rerun the same command with --resume to continue",
    **{
        name: "rerun the same command to continue; finished runs are skipped"
        for name in ("sweep", "finetune", "demo")
    },
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spherelab",
        description="Train scale-invariant networks on the sphere at a fixed effective "
        "learning rate and map the three regimes.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("--version", action="version", version=f"spherelab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"spherelab.commands.{name.replace('-', '_')}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    try:
        return int(args.handler(args) or 0)
    except (ValueError, OSError) as err:
        # User errors are ValueError subclasses with a message that names the fix; an OSError
        # (a full disk, a read-only --out, a file in the way) becomes one line the same way.
        if os.environ.get("SPHERELAB_DEBUG"):
            raise
        text = os_error_line(err) if isinstance(err, OSError) else str(err)
        print(f"spherelab {args.command}: error: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; {RESUME_HINTS.get(args.command, RESUME_HINT)}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
