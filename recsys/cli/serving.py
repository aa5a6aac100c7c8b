"""``recsys serve`` and ``recsys demo``."""

from __future__ import annotations

import argparse
import functools
from typing import Any

from recsys.cli.common import command
from recsys.config import CHAMPION, ServingConfig, Settings


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    from recsys.serving.app import serve

    serving = ServingConfig(
        exploration_share=args.exploration_share, max_k=args.max_k, state_cache=args.state_cache,
        event_loop=args.loop, access_log=args.access_log, require_keys=not args.no_auth,
        rate_per_key=args.rate_per_key, rate_burst=2 * args.rate_per_key,
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


def add_commands(sub: Any) -> None:
    """serve, demo."""

    add = functools.partial(command, parent=sub)
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
    p.add_argument(
        "--rate-per-key", type=float, default=ServingConfig.rate_per_key,
        help="requests a second each API key may make (bursts of twice that); beyond: 429",
    )  # fmt: skip
    p.add_argument(
        "--no-auth", action="store_true",
        help="serve without API keys (anyone who reaches it may write; logged, and in /health)",
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
