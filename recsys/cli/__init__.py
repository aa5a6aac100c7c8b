"""``recsys``: one command line for people, DAG tasks, the Makefile and docker alike.

Every command prints a short summary, or JSON with ``--json``. Heavy libraries are imported by the
command that needs them, so ``recsys --help`` is instant.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback

from recsys.cli import ab, data, keys, models, serving, store
from recsys.cli.common import Parser, fail, json_errors
from recsys.config import Settings


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("recsys")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="recsys", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"recsys {_version()}")
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
    argv = sys.argv[1:] if argv is None else argv
    json_errors("--json" in argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        args.func(args, Settings.from_env())
    except (ValueError, FileNotFoundError) as err:
        fail(f"recsys {args.command}: error: {err}")
    except SystemExit as exit_:  # a command's own sys.exit("message"): the same error shape
        if isinstance(exit_.code, str):
            fail(exit_.code)
        raise
    except Exception as err:
        if type(err).__module__.startswith("mlflow."):  # "not found", "refused": the registry's
            fail(f"recsys {args.command}: error: {err}")
        if not args.json:
            raise  # a bug: the traceback is what to report
        traceback.print_exc()
        fail(f"recsys {args.command}: error: {type(err).__name__}: {err}")
