"""``recsys``: one command line for people, DAG tasks, the Makefile and docker alike.

Every command prints a short summary, or JSON with ``--json``. Heavy libraries are imported by the
command that needs them, so ``recsys --help`` is instant.
"""

from __future__ import annotations

import argparse
import logging
import sys

from recsys.cli import ab, data, keys, models, serving, store
from recsys.config import Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recsys", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    data.add_commands(sub)
    models.add_commands(sub)
    ab.add_commands(sub)
    keys.add_commands(sub)
    store.add_commands(sub)
    serving.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        args.func(args, Settings.from_env())
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"recsys {args.command}: error: {err}")
