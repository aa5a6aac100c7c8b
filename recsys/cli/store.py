"""``recsys store init``: the event store's tables, created by their owner, then its roles."""

from __future__ import annotations

import argparse
import os
from typing import Any

import sqlalchemy as sa

from recsys.cli.common import command, print_result
from recsys.config import Settings

ENV_SERVING_PASSWORD = "RECSYS_SERVING_DB_PASSWORD"
ENV_PIPELINE_PASSWORD = "RECSYS_PIPELINE_DB_PASSWORD"


def create_tables(url: str) -> list[str]:
    """Every table recsys keeps in the event store's database, as this release defines it."""
    from recsys.data.events import EventStore
    from recsys.data.impressions import prepare
    from recsys.registry.alias_log import AliasLog
    from recsys.serving.auth import KeyStore

    store = EventStore(url)  # events, with the columns and indexes an older store lacks
    prepare(store.engine)  # impressions
    AliasLog(url)  # alias_moves, alias_heads
    KeyStore(store.engine)  # api_keys
    names = sorted(sa.inspect(store.engine).get_table_names())
    store.engine.dispose()
    return names


def cmd_store_init(args: argparse.Namespace, settings: Settings) -> None:
    from recsys.data import roles

    url = settings.event_store_url
    tables = create_tables(url)
    result: dict[str, Any] = {"tables": tables, "roles": None}
    if args.roles:
        names = (ENV_SERVING_PASSWORD, ENV_PIPELINE_PASSWORD)
        passwords = {name: os.environ.get(name, "") for name in names}
        missing = [name for name, value in passwords.items() if not value]
        if missing:
            raise ValueError(f"--roles needs {', '.join(missing)} in the environment")
        roles.grant(url, serving=args.serving_role, pipeline=args.pipeline_role,
                    serving_password=passwords[ENV_SERVING_PASSWORD],
                    pipeline_password=passwords[ENV_PIPELINE_PASSWORD],
                    others=args.deny or [])  # fmt: skip
        result["roles"] = {"serving": args.serving_role, "pipeline": args.pipeline_role}
    lines = [f"event store tables: {', '.join(tables)}"]
    if result["roles"]:
        lines.append(f"roles granted: {args.serving_role} (API), {args.pipeline_role} (workers)")
    print_result(result, args.json, lines)


def add_commands(sub: Any) -> None:
    """store init."""
    p = command("store", cmd_store_init, "the event store's tables and roles", sub)
    store = p.add_subparsers(dest="sub", metavar="{init}")
    p = command("init", cmd_store_init, "create or migrate the tables (as their owner)", store)
    p.add_argument("--roles", action="store_true",
                   help=f"also grant the least-privilege roles (passwords from "
                        f"{ENV_SERVING_PASSWORD} and {ENV_PIPELINE_PASSWORD})")  # fmt: skip
    p.add_argument("--serving-role", default="recsys_serving")
    p.add_argument("--pipeline-role", default="recsys_pipeline")
    p.add_argument("--deny", action="append", metavar="DATABASE",
                   help="a database the roles must not connect to (repeatable)")  # fmt: skip
