"""``recsys``: one command line for people, DAG tasks, the Makefile and docker alike.

Every command prints a short summary, or JSON with ``--json``. Heavy libraries are imported by the
command that needs them, so ``recsys --help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from recsys import schema as S
from recsys.config import CHALLENGER, CHAMPION, ServingConfig, Settings


def _print(result: Any, as_json: bool, lines: list[str] | None = None) -> None:
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print("\n".join(lines) if lines else "\n".join(f"{k}: {v}" for k, v in result.items()))


def cmd_events_import(args: argparse.Namespace, settings: Settings) -> None:
    from recsys.data import event_files, events

    store = events.EventStore(settings.event_store_url)
    if args.movielens_100k is not None or args.movielens is not None:
        import pandas as pd

        from recsys.data import movielens

        if args.movielens is not None:
            path = Path(args.movielens)
            records = movielens.load(path)
            source = f"{movielens.FORMATS[movielens.detect_format(path)]} {path}"
        else:
            path = Path(args.movielens_100k) if args.movielens_100k else None
            records = movielens.load_ml100k(path, settings.home / "downloads")
            source = "MovieLens-100K"
        result = events.import_frame(store, pd.DataFrame.from_records(records), "rating")
        result["source"] = source
    else:
        fallback = settings.home / "rejects"
        rejects = args.rejects or event_files.default_rejects_path(args.file, fallback)
        result = event_files.import_file(store, args.file, Path(rejects), args.event_type)
        result["source"] = str(args.file)
    result["store"] = settings.event_store_url
    lines = [
        f"imported {result['inserted']} new events from {result['source']} "
        f"({result['read']} read, {result['duplicates']} already present, "
        f"{result['rejected']} rejected); {result['total_in_store']} in the store",
        f"ingested_at spans {result['first_ingested_at']} .. {result['last_ingested_at']}",
    ]
    if result["rejected"]:
        lines.append(f"rejected rows and why: {result['rejects']}")
    _print(result, args.json, lines)


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> None:
    from recsys.data import ingest
    from recsys.data.lake import Interval

    result = ingest.run(settings, Interval.parse(args.start, args.end))
    collected, checked = result["collected"], result["validation"]
    lines = [
        f"collected {collected['rows']} events for {checked['interval']}",
        f"validation: {checked['summary']}",
    ]
    if not checked["success"]:
        lines.append(f"QUARANTINED: rows at {checked['path']}, report at {checked['report']}")
    elif "features" in result:
        f = result["features"]
        lines.append(
            f"features: {f['n_events']} events, {f['n_users']} users, {f['n_items']} items"
        )
    _print(result, args.json, lines)
    if not checked["success"]:
        sys.exit(3)


def cmd_train(args: argparse.Namespace, settings: Settings) -> None:
    from recsys.config import PipelineConfig
    from recsys.release import pipeline

    cfg = PipelineConfig()
    if args.epochs is not None:
        cfg = cfg.with_epochs(args.mode, args.epochs)
    trained = pipeline.train(settings, mode=args.mode, cfg=cfg)
    if trained.get("skipped"):
        _print(trained, args.json, [f"skipped: {trained['reason']}"])
        return
    evaluated = pipeline.evaluate(settings, trained["run_id"], cfg)
    registered = pipeline.register(settings, trained["run_id"])
    result = {**trained, **evaluated, **registered}
    _print(
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
    _print(pipeline.evaluate(settings, run_id), args.json)


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
    _print(result, args.json, lines)


def cmd_registry(args: argparse.Namespace, settings: Settings) -> None:
    from recsys.registry.listing import format_registry, registry_rows

    rows = registry_rows(settings)
    _print(rows, args.json, format_registry(rows) if rows else ["no model versions yet"])


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
    _print([m.as_dict() for m in moves], args.json, lines)


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
    _print(result, args.json, lines)


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> None:
    from recsys.registry import aliases
    from recsys.registry.alias_log import AliasError, AliasLog, actor
    from recsys.registry.client import Registry

    alias_log = AliasLog(settings.event_store_url)
    try:
        move = aliases.rollback(Registry(settings), alias_log, actor(), args.reason)
    except AliasError as err:
        sys.exit(f"recsys rollback: error: {err}")
    _print(
        move.as_dict(),
        args.json,
        [
            f"{CHAMPION} rolled back from version {move.from_version} to {move.to_version}; "
            "serving follows within its polling interval",
            move.describe(),
        ],
    )


def cmd_quarantine_list(args: argparse.Namespace, settings: Settings) -> None:
    from recsys.data.quarantine import list_quarantined

    rows = list_quarantined(settings)
    lines = [
        f"{r['interval']}  {r['rows']:>7} rows  {r['summary']}\n    rows: {r['path']}\n"
        f"    report: {r['data_docs'] or r['report']}"
        for r in rows
    ]
    _print(rows, args.json, lines or ["no quarantined partitions"])


def cmd_quarantine_release(args: argparse.Namespace, settings: Settings) -> None:
    from recsys.data.ingest import release

    result = release(settings, args.partition)
    if result["released"]:
        lines = [
            f"released {args.partition}: {result['validation']['summary']}",
            f"features rebuilt: {', '.join(result['features_rebuilt']) or 'none (no rows)'}",
        ]
    else:
        lines = [
            f"{args.partition} still fails validation: {result['validation']['summary']}",
            f"it stays quarantined; report at {result['validation']['report']}",
        ]
    _print(result, args.json, lines)
    if not result["released"]:
        sys.exit(3)


def cmd_lineage(args: argparse.Namespace, settings: Settings) -> None:
    from recsys.registry import lineage

    info = lineage.of_version(settings, args.version)
    _print(info, args.json, lineage.format_lineage(info))


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    from recsys.serving.app import serve

    serving = ServingConfig(
        exploration_share=args.exploration_share, max_k=args.max_k, state_cache=args.state_cache,
        event_loop=args.loop, access_log=args.access_log,
    )  # fmt: skip
    serve(settings, host=args.host, port=args.port, poll=args.poll_seconds, serving=serving)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> None:
    from recsys import demo

    plan = demo.Plan(
        synthetic=args.synthetic,
        weeks=args.weeks,
        days=args.days,
        api_port=args.port,
        airflow_port=args.airflow_port,
    )
    demo.run(settings, plan, reset=args.reset)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recsys", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Any, help_: str, parent: Any = sub) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_, description=help_)
        p.add_argument("--json", action="store_true", help="print JSON for scripts")
        p.set_defaults(func=func)
        return p

    events = sub.add_parser("events", help="the event store").add_subparsers(
        dest="sub", required=True
    )
    p = add("import", cmd_events_import, "load events into the event store (idempotent)", events)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--movielens-100k",
        nargs="?",
        const="",
        metavar="PATH",
        help="MovieLens-100K from the recbole==1.2.1 wheel (downloaded with pip), "
        "or from a given .whl/.inter/u.data file",
    )
    src.add_argument(
        "--movielens",
        metavar="PATH",
        help="a MovieLens ratings file: 100K .inter or u.data, 1M ratings.dat, latest "
        "ratings.csv (userId,movieId,rating,timestamp), or the recbole .whl",
    )
    src.add_argument(
        "--file",
        metavar="PATH_OR_URL",
        help="a .csv, .parquet or .jsonl file (.csv.gz, .jsonl.gz) in the event schema: a local "
        "path or an fsspec URL (file://, memory://, s3://, ...). Bad rows are rejected, the rest "
        "load (limits: recsys.data.event_files.ImportLimits): user_id, item_id and event_time are "
        "required; ids are text or integers of at most 128 characters without whitespace; "
        "event_time and ingested_at ISO-8601 or Unix seconds from 1995-01-01 to now + 1 day; "
        f"event_type one of {', '.join(S.EVENT_TYPES)}; value a finite number; no NUL or invalid "
        "UTF-8; a record of at most 1048576 characters. A file that cannot be read at all "
        "(missing columns, not Parquet, ...) is an error and nothing is imported",
    )
    p.add_argument(
        "--event-type",
        default="view",
        choices=S.EVENT_TYPES,
        help="event type for rows that have none (default: view)",
    )
    p.add_argument(
        "--rejects",
        metavar="PATH",
        help="with --file: where rejected rows go, one JSON object a line with the line (or "
        "Parquet row) number, the reason and the raw text; written only when a row is rejected "
        "(default: FILE.rejects.jsonl beside a local FILE, $RECSYS_HOME/rejects/ for a URL)",
    )

    p = add("ingest", cmd_ingest, "collect, validate and build features for one interval")
    p.add_argument("--start", required=True, help="interval start (ISO-8601, UTC)")
    p.add_argument("--end", required=True, help="interval end, exclusive (ISO-8601, UTC)")

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
    registry = p.add_subparsers(dest="sub", metavar="{history,live-at}")  # none: the listing
    p = add(
        "history", cmd_registry_history, "every recorded move of an alias: when, who, why", registry
    )
    p.add_argument("--alias", default=CHAMPION, help=f"default: {CHAMPION}")
    p = add(
        "live-at", cmd_registry_live_at, "which version held an alias at a given time", registry
    )
    p.add_argument("time", help="ISO-8601, UTC unless it has an offset (e.g. 2026-11-01T12:00)")
    p.add_argument("--alias", default=CHAMPION, help=f"default: {CHAMPION}")

    p = add("rollback", cmd_rollback, f"move {CHAMPION} back to the previous champion (recorded)")
    p.add_argument("--reason", required=True, help="why; recorded with the move")

    quarantine = sub.add_parser("quarantine", help="partitions stopped by the validation gate")
    quarantine = quarantine.add_subparsers(dest="sub", required=True)
    add("list", cmd_quarantine_list, "quarantined partitions, why, and where they are", quarantine)
    p = add(
        "release",
        cmd_quarantine_release,
        "re-collect and re-validate a partition after a fix; publish it if it passes",
        quarantine,
    )
    p.add_argument("partition", help="partition id, as `recsys quarantine list` prints it")

    p = add("lineage", cmd_lineage, "which data made a model version (partitions and hashes)")
    p.add_argument("version", help=f"a version number or an alias such as {CHAMPION}")

    p = add("serve", cmd_serve, f"serve recommendations from the {CHAMPION} model over HTTP")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--poll-seconds", type=float, default=10.0, help="registry polling interval")
    p.add_argument(
        "--exploration-share",
        type=float,
        default=0.1,
        help="share of each list given to new items the model has no row for (0 to 1)",
    )
    p.add_argument("--max-k", type=int, default=100, help="the longest list a request may ask")
    p.add_argument(
        "--state-cache",
        type=int,
        default=ServingConfig.state_cache,
        help="histories whose model state is kept, so a repeated history skips the model (0: off)",
    )
    p.add_argument(
        "--loop", choices=("asyncio", "uvloop"), default=ServingConfig.event_loop,
        help="the server's event loop",
    )  # fmt: skip
    p.add_argument(
        "--access-log", action=argparse.BooleanOptionalAction, default=ServingConfig.access_log,
        help="log a line per request (served lists are logged as impressions either way)",
    )  # fmt: skip

    p = add("demo", cmd_demo, "run the whole loop on MovieLens-100K through the Airflow scheduler")
    p.add_argument("--reset", action="store_true", help="delete a previous demo's state first")
    p.add_argument(
        "--synthetic", action="store_true", help="a small synthetic stream instead of MovieLens"
    )
    p.add_argument("--weeks", type=int, default=6, help="weeks of MovieLens for the first backfill")
    p.add_argument("--days", type=int, default=3, help="days backfilled after the first champion")
    p.add_argument("--port", type=int, default=8000, help="port of the recommendation API")
    p.add_argument("--airflow-port", type=int, default=8080, help="port of the Airflow api-server")
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


if __name__ == "__main__":
    main()
