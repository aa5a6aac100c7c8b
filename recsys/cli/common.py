"""What every command shares: its ``--json`` and ``-v`` flags, its help, how it prints and fails."""

from __future__ import annotations

import argparse
import copy
import json
import sys
from typing import Any, NoReturn

# Exit codes (README, "Exit codes"): 0 done, 1 refused or failed, 2 usage, 3 data quarantined.
OK, ERROR, USAGE, QUARANTINED = 0, 1, 2, 3

_json_errors = False  # set by ``recsys.cli.main`` when ``--json`` is on the command line


def json_errors(on: bool) -> None:
    global _json_errors
    _json_errors = on


def fail(message: str, code: int = ERROR) -> NoReturn:
    """Exit with ``code``: the message on stderr, or ``{"error", "exit_code"}`` on stdout with
    ``--json`` (scripts read one place)."""
    if _json_errors:
        print(json.dumps({"error": message, "exit_code": code}))
    else:
        print(message, file=sys.stderr)
    sys.exit(code)


def print_result(result: Any, as_json: bool, lines: list[str] | None = None) -> None:
    """JSON with ``--json``, else ``lines`` (or ``key: value`` per line)."""
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print("\n".join(lines) if lines else "\n".join(f"{k}: {v}" for k, v in result.items()))


class HelpFormatter(argparse.HelpFormatter):
    """``--help`` shows each option's default, options with no help text of their own included."""

    @staticmethod
    def _shown_default(action: argparse.Action) -> bool:
        return action.default not in (None, False, [], argparse.SUPPRESS) and (
            bool(action.option_strings) or action.nargs in ("?", "*")
        )

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and self._shown_default(action):
            action = copy.copy(action)
            action.help = "default: %(default)s"
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or "default:" in text or not self._shown_default(action):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """Every ``recsys`` parser: defaults in ``--help``, usage errors as JSON under ``--json``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        if _json_errors:
            fail(f"{self.prog}: error: {message}", USAGE)
        super().error(message)


def command(name: str, func: Any, help_: str, parent: Any) -> argparse.ArgumentParser:
    """A subcommand with its ``--help`` text, ``--json`` and ``-v`` (also accepted here)."""
    p = parent.add_parser(name, help=help_, description=help_)
    p.add_argument("--json", action="store_true", help="print JSON for scripts, errors included")
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="log at INFO level")  # fmt: skip
    p.set_defaults(func=func)
    return p
