"""Command line of the national registry: ``provex-registry``.

For now it describes itself; ``init``, ``serve`` and the admin actions arrive
with the registry service.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import provex


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``provex-registry``."""
    parser = argparse.ArgumentParser(
        prog="provex-registry",
        description=(
            "The Provex national registry: enrolls provincial nodes, keeps the supervision "
            "catalog, issues signed dataset identifiers and logs what it signs in a "
            "Merkle transparency log."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {provex.__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``provex-registry``."""
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0
