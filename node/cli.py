"""Command line of a provincial exchange node: ``provex-node``.

For now it describes itself; ``init``, ``enroll``, ``serve`` and the operator
actions arrive with the node service.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import provex


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``provex-node``."""
    parser = argparse.ArgumentParser(
        prog="provex-node",
        description=(
            "A Provex provincial exchange node: holds its members' dataset listings and "
            "trades, searches across the federation and follows the national registry."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {provex.__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``provex-node``."""
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0
