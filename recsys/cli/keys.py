"""``recsys keys create | list | revoke``: the API keys clients send as ``Bearer`` tokens."""

from __future__ import annotations

import argparse
import functools
from typing import Any

from recsys.cli.common import command, print_result
from recsys.config import Settings


def _store(settings: Settings) -> Any:
    from recsys.data.events import EventStore
    from recsys.serving.auth import KeyStore

    return KeyStore(EventStore(settings.event_store_url).engine)


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> None:
    made = _store(settings).create(args.scopes, args.name or "")
    lines = [
        f"API key {made['id']} ({made['name']}), scopes {', '.join(made['scopes'])}:",
        f"  {made['key']}",
        "Shown once: only its hash is stored. Clients send Authorization: Bearer <key>.",
    ]
    print_result(made, args.json, lines)


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> None:
    keys = [k.as_dict() for k in _store(settings).list()]
    lines = [f"{'id':<14}{'name':<24}{'scopes':<44}{'created':<21}revoked"]
    for k in keys:
        lines.append(f"{k['id']:<14}{k['name'][:23]:<24}{','.join(k['scopes']):<44}"
                     f"{k['created_at'][:19]:<21}{(k['revoked_at'] or '-')[:19]}")  # fmt: skip
    print_result(keys, args.json, lines if keys else ["no API keys yet"])


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> None:
    key = _store(settings).revoke(args.id).as_dict()
    print_result(key, args.json, [f"API key {key['id']} revoked at {key['revoked_at']}"])


def add_commands(sub: Any) -> None:
    """keys create, keys list, keys revoke."""
    from recsys.serving.auth import SCOPES

    p = command("keys", cmd_keys_list, "API keys: who may write events and read lists", sub)
    keys = p.add_subparsers(dest="sub", metavar="{create,list,revoke}")  # none: the list
    add = functools.partial(command, parent=keys)
    p = add("create", cmd_keys_create, "create a key; it is printed once")
    p.add_argument("--scopes", required=True, help=f"comma-separated among {', '.join(SCOPES)}")
    p.add_argument("--name", help="what the key is for (default: its id)")
    add("list", cmd_keys_list, "every key: id, name, scopes, created, revoked")
    p = add("revoke", cmd_keys_revoke, "refuse a key from now on (within key_cache_s)")
    p.add_argument("id", help="the key's id (recsys keys list)")
