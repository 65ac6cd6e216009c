"""The `spherelab` command: a thin dispatcher over the library (one module per subcommand)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from spherelab import __version__

COMMANDS = ("train", "sweep", "report", "diagnose", "toy", "finetune", "demo")


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
        importlib.import_module(f"spherelab.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    try:
        return int(args.handler(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        # User errors are ValueError subclasses with a message that names the fix.
        if os.environ.get("SPHERELAB_DEBUG"):
            raise
        print(f"spherelab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
