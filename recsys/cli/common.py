"""What every command shares: its ``--json`` flag and how it prints."""

from __future__ import annotations

import argparse
import json
from typing import Any


def print_result(result: Any, as_json: bool, lines: list[str] | None = None) -> None:
    """JSON with ``--json``, else ``lines`` (or ``key: value`` per line)."""
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print("\n".join(lines) if lines else "\n".join(f"{k}: {v}" for k, v in result.items()))


def command(name: str, func: Any, help_: str, parent: Any) -> argparse.ArgumentParser:
    """A subcommand with its ``--help`` text and ``--json``."""
    p = parent.add_parser(name, help=help_, description=help_)
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(func=func)
    return p
