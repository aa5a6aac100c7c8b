"""``recsys events import``, ``recsys ingest``, ``recsys quarantine list|release``."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Any

from recsys import schema as S
from recsys.cli.common import command, print_result
from recsys.config import Settings, redact


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
    result["store"] = redact(settings.event_store_url)
    lines = [
        f"imported {result['inserted']} new events from {result['source']} "
        f"({result['read']} read, {result['duplicates']} already present, "
        f"{result['rejected']} rejected); {result['total_in_store']} in the store",
        f"ingested_at spans {result['first_ingested_at']} .. {result['last_ingested_at']}",
    ]
    if result["rejected"]:
        lines.append(f"rejected rows and why: {result['rejects']}")
    print_result(result, args.json, lines)


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
    print_result(result, args.json, lines)
    if not checked["success"]:
        sys.exit(3)


def cmd_quarantine_list(args: argparse.Namespace, settings: Settings) -> None:
    from recsys.data.quarantine import list_quarantined

    rows = list_quarantined(settings)
    lines = [
        f"{r['interval']}  {r['rows']:>7} rows  {r['summary']}\n    rows: {r['path']}\n"
        f"    report: {r['data_docs'] or r['report']}"
        for r in rows
    ]
    print_result(rows, args.json, lines or ["no quarantined partitions"])


def cmd_quarantine_release(args: argparse.Namespace, settings: Settings) -> None:
    from recsys.data.ingest import release

    result = release(settings, args.partition, args.exclude_bad_rows, args.accept_drift)
    if result["released"]:
        lines = [
            f"released {args.partition}: {result['validation']['summary']}",
            f"features rebuilt: {', '.join(result['features_rebuilt']) or 'none (no rows)'}",
        ]
        if result["rejected_rows"]:
            lines.append(
                f"{result['rejected_rows']} rows rejected, with their reasons: "
                f"{result['validation']['rejects']}"
            )
    else:
        lines = [
            f"{args.partition} still fails validation: {result['validation']['summary']}",
            f"it stays quarantined; report at {result['validation']['report']}",
        ]
    print_result(result, args.json, lines)
    if not result["released"]:
        sys.exit(3)


def add_commands(sub: Any) -> None:
    """events import, ingest, quarantine list/release."""

    add = functools.partial(command, parent=sub)
    events = sub.add_parser("events", help="the event store").add_subparsers(
        dest="sub", required=True
    )
    p = command(
        "import", cmd_events_import, "load events into the event store (idempotent)", events
    )
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
        "load (limits: recsys.data.contract.ImportLimits): user_id, item_id and event_time are "
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

    quarantine = sub.add_parser("quarantine", help="partitions stopped by the validation gate")
    quarantine = quarantine.add_subparsers(dest="sub", required=True)
    command(
        "list", cmd_quarantine_list, "quarantined partitions, why, and where they are", quarantine
    )
    p = command(
        "release",
        cmd_quarantine_release,
        "re-collect and re-validate a partition after a fix; publish it if it passes",
        quarantine,
    )
    p.add_argument("partition", help="partition id, as `recsys quarantine list` prints it")
    p.add_argument(
        "--exclude-bad-rows",
        action="store_true",
        help="publish the rows that pass, however many fail a row check; the others are kept "
        "with their reasons in the partition's reject table",
    )
    p.add_argument(
        "--accept-drift",
        metavar="REASON",
        help="publish a partition that drift alone stopped (the reason is recorded with it)",
    )
