"""The single `cleanpose` command; each subcommand is a thin function over the library.

Every subcommand registers itself through one `_add_<name>(subparsers)` function listed in
`_SUBCOMMANDS`; the parser it adds sets `handler` to a function `(args) -> int` (the exit status).
Errors that cleanpose raises on purpose (`CleanposeError`) are printed as one line, exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from cleanpose import __version__
from cleanpose.errors import CleanposeError

logger = logging.getLogger("cleanpose")


def _setup_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("cleanpose")
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    root.propagate = False


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="cleanpose",
        description="Category-level 6D object pose and size estimation from RGB-D (CleanPose).",
    )
    parser.add_argument("--version", action="version", version=f"cleanpose {__version__}")
    parser.add_argument("--quiet", action="store_true", help="no progress bars, warnings and errors only")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    _setup_logging(args.quiet)
    try:
        return int(args.handler(args) or 0)
    except CleanposeError as error:
        print(f"cleanpose {args.command}: error: {error}", file=sys.stderr)
        return 2


# Subcommands in help order; each adds its parser and sets `handler`. Keep this list last.
_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []
