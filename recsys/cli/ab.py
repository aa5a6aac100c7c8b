"""``recsys ab status | start | conclude``: A/B tests between ``champion`` and ``candidate``."""

from __future__ import annotations

import argparse
import functools
from typing import Any

from recsys.cli.common import command, print_result
from recsys.config import Settings


def cmd_ab_status(args: argparse.Namespace, settings: Settings) -> None:
    from recsys.release import ab

    state = ab.status(settings)
    print_result(state, args.json, ab.format_status(state))


def cmd_ab_start(args: argparse.Namespace, settings: Settings) -> None:
    from recsys.registry.alias_log import AliasError
    from recsys.release import ab

    expected = ... if args.expected is None else None if args.expected == "none" else args.expected
    try:
        move = ab.start(settings, args.version, args.reason, expected=expected)
    except AliasError as err:
        raise ValueError(str(err)) from err
    print_result(move.as_dict(), args.json, [move.describe()])


def cmd_ab_conclude(args: argparse.Namespace, settings: Settings) -> None:
    from recsys.release import ab

    state = ab.conclude(settings)
    lines = ab.format_status(state) + [f"action: {state['action']}"]
    print_result(state, args.json, lines)


def add_commands(sub: Any) -> None:
    """ab status, ab start, ab conclude."""
    p = command("ab", cmd_ab_status, "A/B tests: champion against the candidate alias", sub)
    ab = p.add_subparsers(dest="sub", metavar="{status,start,conclude}")  # none: status
    add = functools.partial(command, parent=ab)
    add("status", cmd_ab_status, "CTR per arm with intervals, and the sequential decision")
    p = add("start", cmd_ab_start, "point candidate at a version: a share of users gets it")
    p.add_argument("version", help="the model version to test against the champion")
    p.add_argument("--reason", required=True, help="why; recorded with the move")
    p.add_argument("--expected", help="the candidate version you decided against (compare-and-set)")
    add("conclude", cmd_ab_conclude,
        "act on the decision: a winner becomes champion, either way the test ends")  # fmt: skip
