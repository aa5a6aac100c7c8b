"""``recsys train | evaluate | promote | registry [history|live-at|reader] | rollback | lineage``"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from typing import Any

from recsys.cli.common import command, print_result
from recsys.config import CHALLENGER, CHAMPION, Settings

ENV_READER_PASSWORD = "RECSYS_SERVING_MLFLOW_PASSWORD"


def cmd_train(args: argparse.Namespace, settings: Settings) -> None:
    from recsys.cli import progress
    from recsys.config import PipelineConfig
    from recsys.release import pipeline

    cfg = PipelineConfig()
    if args.epochs is not None:
        cfg = cfg.with_epochs(args.mode, args.epochs)
    shown = progress.for_stream(sys.stderr)
    try:
        trained = pipeline.train(settings, mode=args.mode, cfg=cfg, progress=shown)
    finally:
        shown.close()
    if trained.get("skipped"):
        print_result(trained, args.json, [f"skipped: {trained['reason']}"])
        return
    evaluated = pipeline.evaluate(settings, trained["run_id"], cfg)
    registered = pipeline.register(settings, trained["run_id"])
    result = {**trained, **evaluated, **registered}
    print_result(
        result,
        args.json,
        [
            f"{args.mode} model: run {trained['run_id']}, version {registered['version']} "
            f"(alias {CHALLENGER})",
            f"test NDCG@10 {evaluated['test.ndcg_at_10']:.4f}  "
            f"HR@10 {evaluated['test.hr_at_10']:.4f}  "
            f"(popularity {evaluated['popularity.ndcg_at_10']:.4f} / "
            f"{evaluated['popularity.hr_at_10']:.4f})",
            "next: `recsys promote` to compare it with the champion",
        ],
    )


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> None:
    from recsys.registry.client import Registry
    from recsys.release import pipeline

    run_id = args.run_id or Registry(settings).version(args.version).run_id
    print_result(pipeline.evaluate(settings, run_id), args.json)


def cmd_promote(args: argparse.Namespace, settings: Settings) -> None:
    from recsys.registry.client import Registry
    from recsys.release import promote

    version = args.version
    if version is None:
        challenger = Registry(settings).alias(CHALLENGER)
        if challenger is None:
            sys.exit("no model version has alias 'challenger'; train one with `recsys train`")
        version = challenger.version
    result = promote.run(settings, version, force=args.force, block=args.block)
    verdict = "PROMOTED" if result["promoted"] else "not promoted"
    lines = [f"version {version} {verdict}: {result['reason']}"]
    for c in result.get("criteria", []):
        mark = "ok  " if c["passed"] else "FAIL"
        value = "-" if c["challenger"] is None else f"{c['challenger']:.4f}"
        champ = "-" if c["champion"] is None else f"{c['champion']:.4f}"
        lines.append(f"  {mark} {c['criterion']:<44} {value:>8} vs {champ:>8}  {c['threshold']}")
    print_result(result, args.json, lines)


def cmd_registry(args: argparse.Namespace, settings: Settings) -> None:
    from recsys.registry.listing import format_registry, registry_rows
    from recsys.release import freshness

    rows = registry_rows(settings)
    lines = format_registry(rows) + ["", freshness.live(settings).line()]
    print_result(rows, args.json, lines if rows else ["no model versions yet"])


def _alias_log(settings: Settings, alias: str) -> Any:
    """The alias log, first brought in step with MLflow (moves made outside recsys recorded)."""
    from recsys.registry import aliases
    from recsys.registry.alias_log import AliasLog
    from recsys.registry.client import Registry

    alias_log = AliasLog(settings.event_store_url)
    aliases.reconcile(Registry(settings), alias_log, alias)
    return alias_log


def cmd_registry_history(args: argparse.Namespace, settings: Settings) -> None:
    moves = _alias_log(settings, args.alias).history(args.alias)
    lines = [m.describe() for m in moves] or [f"no recorded moves of {args.alias}"]
    print_result([m.as_dict() for m in moves], args.json, lines)


def cmd_registry_live_at(args: argparse.Namespace, settings: Settings) -> None:
    from recsys.registry.alias_log import parse_time

    when = parse_time(args.time)
    move = _alias_log(settings, args.alias).live_at(args.alias, when)
    version = move.to_version if move else None
    result = {
        "alias": args.alias,
        "at": when.isoformat(),
        "version": version,
        "move": move.as_dict() if move else None,
    }
    if move is None:
        lines = [f"{args.alias} at {when.isoformat()}: no version (no recorded move before then)"]
    else:
        lines = [
            f"{args.alias} at {when.isoformat()}: "
            + (f"version {version}" if version else "no version (removed)"),
            f"since {move.describe()}",
        ]
    print_result(result, args.json, lines)


def cmd_registry_reader(args: argparse.Namespace, settings: Settings) -> None:
    from mlflow.exceptions import MlflowException

    from recsys.registry.users import ensure_reader

    password = os.environ.get(ENV_READER_PASSWORD, "")
    if not password:
        raise ValueError(f"the reader's password comes from {ENV_READER_PASSWORD}, which is unset")
    try:
        result = ensure_reader(settings.tracking_uri, args.username, password)
    except MlflowException as err:  # refused or unreachable: the server's words, in one line
        sys.exit(f"recsys registry reader: error: {err}")
    print_result({"username": result.username, "created": result.created}, args.json,
                 [result.line()])  # fmt: skip


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> None:
    from recsys.registry import aliases
    from recsys.registry.alias_log import AliasError, AliasLog, actor
    from recsys.registry.client import Registry

    alias_log = AliasLog(settings.event_store_url)
    try:
        move = aliases.rollback(Registry(settings), alias_log, actor(), args.reason)
    except AliasError as err:
        sys.exit(f"recsys rollback: error: {err}")
    print_result(
        move.as_dict(),
        args.json,
        [
            f"{CHAMPION} rolled back from version {move.from_version} to {move.to_version}; "
            "serving follows within its polling interval",
            move.describe(),
        ],
    )


def cmd_lineage(args: argparse.Namespace, settings: Settings) -> None:
    from recsys.registry import lineage

    info = lineage.of_version(settings, args.version)
    print_result(info, args.json, lineage.format_lineage(info))


def add_commands(sub: Any) -> None:
    """train, evaluate, promote, registry (history, live-at, reader), rollback, lineage."""

    add = functools.partial(command, parent=sub)
    p = add("train", cmd_train, "train, evaluate and register a model (alias challenger)")
    p.add_argument("--mode", choices=["full", "incremental"], default="full")
    p.add_argument("--epochs", type=int, help="override the number of epochs")

    p = add("evaluate", cmd_evaluate, "evaluate a run or model version on its features")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--run-id")
    who.add_argument("--version")

    p = add("promote", cmd_promote, f"promote a version to {CHAMPION} if it beats the champion")
    p.add_argument("--version", help=f"model version (default: the {CHALLENGER})")
    override = p.add_mutually_exclusive_group()
    override.add_argument("--force", metavar="REASON", help="promote whatever the gate says")
    override.add_argument("--block", metavar="REASON", help="refuse whatever the gate says")

    p = add("registry", cmd_registry, "list model versions, aliases, metrics and decisions")
    registry = p.add_subparsers(dest="sub", metavar="{history,live-at,reader}")  # none: listing
    p = command(
        "history", cmd_registry_history, "every recorded move of an alias: when, who, why", registry
    )
    p.add_argument("--alias", default=CHAMPION, help=f"default: {CHAMPION}")
    p = command(
        "live-at", cmd_registry_live_at, "which version held an alias at a given time", registry
    )
    p.add_argument("time", help="ISO-8601, UTC unless it has an offset (e.g. 2026-11-01T12:00)")
    p.add_argument("--alias", default=CHAMPION, help=f"default: {CHAMPION}")

    p = command(
        "reader",
        cmd_registry_reader,
        f"create or reset the API's read-only MLflow user (password: {ENV_READER_PASSWORD})",
        registry,
    )
    p.add_argument("--username", default="recsys_serving")

    p = add("rollback", cmd_rollback, f"move {CHAMPION} back to the previous champion (recorded)")
    p.add_argument("--reason", required=True, help="why; recorded with the move")

    p = add("lineage", cmd_lineage, "which data made a model version (partitions and hashes)")
    p.add_argument("version", help=f"a version number or an alias such as {CHAMPION}")
