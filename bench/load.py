"""Bounded load on the serving API from a second process, with a champion swap in the middle.

    .venv/bin/python bench/load.py                            # 200 clients, 60 s, synthetic
    .venv/bin/python bench/load.py --clients 20 --seconds 10 --no-mlflow      # smoke
    .venv/bin/python bench/load.py --movielens                # MovieLens-100K champion instead
    .venv/bin/python bench/load.py --store-url postgresql+psycopg://postgres@127.0.0.1/load

Setup (not timed): a synthetic stream (``recsys.data.synthetic``, or MovieLens-100K with
``--movielens``) in the event store of a temporary ``RECSYS_HOME``, a model trained for
``--epochs`` and forced to champion, and its run registered again as a second version (the swap
target). ``recsys serve`` runs as a subprocess on a free loopback port, polling the registry every
``--poll-seconds``.

``bench/loadgen.py`` runs in its own process: ``--clients`` closed-loop keep-alive clients for
``--seconds``, mixing ``GET /recommendations/{user}`` (known users and a few unknown ones) with
``POST /events`` (a ``--event-share`` of the requests), each event with a unique ``event_id``
that the load generator records with its answer. Halfway through, the ``champion`` alias moves to
the second version. Afterwards the event store is queried directly: every event answered with 201
must be there. The table gives requests, req/s (answers with 2xx), latency percentiles per
endpoint, errors by kind (HTTP status or the client's exception), events accepted / stored /
lost, and the time from the alias move to the first answer from the new version. Exits 1 on any
5xx or lost event. Results go to the MLflow experiment ``bench-load`` unless ``--no-mlflow``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from loadgen import EVENT_ID_SLOT
from serve import (
    BIN,
    LOADGEN,
    build_champion,
    child_env,
    free_port,
    reload_stats,
    second_version,
    start,
    state_cache_counts,
    stop,
    wait_ready,
)

from recsys.config import CHAMPION, Settings

RECS, EVENTS = "GET /recommendations/{user}", "POST /events"


def build_synthetic_champion(settings: Settings, epochs: int, n_users: int) -> None:
    """A synthetic stream -> one interval -> features -> a full model, registered and promoted."""
    from common import champion_from_store

    from recsys.data import events, synthetic

    store = events.EventStore(settings.event_store_url)
    store.append(events.prepare_rows(synthetic.generate(n_users=n_users, days=3)))
    champion_from_store(settings, epochs, "the synthetic stream")


def request_mix(settings: Settings, n: int, event_share: float, seed: int) -> list[dict]:
    """``n`` requests: recommendations for stored users (1 in 20 unknown), and click/view events
    on stored items whose ``event_id`` the load generator fills in."""
    import sqlalchemy as sa

    from recsys import schema as S
    from recsys.data.events import EventStore, events_table

    store, c = EventStore(settings.event_store_url), events_table.c
    with store.engine.connect() as conn:
        users = sorted(str(r[0]) for r in conn.execute(sa.select(c[S.USER_ID]).distinct()))
        items = sorted(str(r[0]) for r in conn.execute(sa.select(c[S.ITEM_ID]).distinct()))
    rng = np.random.default_rng(seed)
    mix = []
    for _ in range(n):
        user = (
            users[rng.integers(len(users))] if rng.random() > 0.05 else f"new-{rng.integers(1e6)}"
        )
        if rng.random() < event_share:
            body = {"user_id": user, "item_id": items[rng.integers(len(items))]}
            body |= {"event_type": str(rng.choice(["view", "click"])), "event_id": EVENT_ID_SLOT}
            mix.append({"method": "POST", "path": "/events", "body": body})
        else:
            mix.append({"method": "GET", "path": f"/recommendations/{user}?k=10", "body": None})
    return mix


def stored_ids(settings: Settings, prefix: str) -> set[str]:
    """Event ids starting with ``prefix`` in the event store, read directly (not via the API)."""
    import sqlalchemy as sa

    from recsys import schema as S
    from recsys.data.events import EventStore, events_table

    col = events_table.c[S.EVENT_ID]
    with EventStore(settings.event_store_url).engine.connect() as conn:
        return {r[0] for r in conn.execute(sa.select(col).where(col.like(f"{prefix}%")))}


def error_kind(status: int, version: str) -> str | None:
    """None for a 2xx; else ``HTTP <status>`` or the client's exception class name."""
    if 200 <= status < 300:
        return None
    return (version or "exception") if status == 0 else f"HTTP {status}"


def endpoint_rows(samples: list, seconds: float) -> list[dict[str, Any]]:
    """Per endpoint: requests, req/s (2xx), latency percentiles (ms, answered requests), errors."""
    rows = []
    for name in (RECS, EVENTS):
        mine = [s for s in samples if (len(s) == 6) == (name == EVENTS)]
        answered = np.array([s[1] for s in mine if s[2]]) * 1000
        lat = answered if len(answered) else np.array([np.nan])
        kinds = Counter(k for s in mine if (k := error_kind(s[2], s[3])))
        ok = sum(1 for s in mine if 200 <= s[2] < 300)
        p50, p95, p99 = np.percentile(lat, [50, 95, 99])
        rows.append(
            {
                "endpoint": name,
                "requests": len(mine),
                "req_s": ok / seconds,
                "p50_ms": float(p50),
                "p95_ms": float(p95),
                "p99_ms": float(p99),
                "max_ms": float(lat.max()),
                "errors": dict(sorted(kinds.items())),
            }
        )
    return rows


def run_load(
    args: argparse.Namespace, settings: Settings, work: Path, stack: ExitStack
) -> dict[str, Any]:
    """Serve, load, swap halfway; returns the samples, the swap and the server's own counters."""
    from recsys.registry.client import Registry

    old, new = second_version(settings)
    port, log = free_port(), work / "recsys.log"
    cmd = [str(BIN / "recsys"), "serve", "--port", str(port), "--no-auth"]
    proc = start(cmd + ["--poll-seconds", str(args.poll_seconds)], child_env(settings), log, stack)
    wait_ready(proc, f"http://127.0.0.1:{port}/ready", log)
    requests, prefix = work / "requests.json", f"load-{uuid.uuid4().hex[:8]}-"
    mix = request_mix(settings, 5000, args.event_share, args.seed)
    requests.write_text(json.dumps(mix))
    out = work / "samples.json"
    gen = subprocess.Popen(
        [sys.executable, str(LOADGEN), "--port", str(port), "--requests", str(requests)]
        + ["--clients", str(args.clients), "--seconds", str(args.seconds), "--warmup", "0"]
        + ["--id-prefix", prefix, "--out", str(out)]
    )
    stack.callback(gen.kill)  # a no-op once it has finished
    time.sleep(args.seconds / 2)
    moved_at = time.time()
    Registry(settings).set_alias(CHAMPION, new)
    if gen.wait() != 0:
        raise SystemExit("the load generator failed")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=30) as resp:
        health = json.loads(resp.read())
    hits, misses = state_cache_counts(port)  # the version served since the swap
    stop(proc, open(os.devnull))  # SIGTERM: a graceful shutdown flushes the impressions
    result = json.loads(out.read_text())
    swap = {"moved_at": moved_at, "old": old, "new": new}
    state = {"state_hits": hits, "state_misses": misses}
    return {"run": result, **swap, "prefix": prefix, "health": health, "log": str(log), **state}


def analyse(settings: Settings, load: dict[str, Any]) -> dict[str, Any]:
    """Endpoint rows, errors, the event audit against the store and the swap."""
    run, moved_at, old, new = load["run"], load["moved_at"], load["old"], load["new"]
    samples = run["samples"]
    accepted = {s[4] for s in samples if len(s) == 6 and s[2] == 201}
    answered_new = sum(1 for s in samples if len(s) == 6 and s[2] == 201 and s[5])
    stored = stored_ids(settings, load["prefix"])
    swap = reload_stats(run, moved_at, old, new)
    first_new = moved_at + swap["seconds_to_new_version"]  # NaN: never, and nothing is after
    before = Counter(s[3] for s in samples if s[2] == 200 and s[0] + s[1] < moved_at)
    after = Counter(s[3] for s in samples if s[2] == 200 and s[0] > first_new)
    return {
        "rows": endpoint_rows(samples, run["seconds"]),
        "errors": dict(Counter(k for s in samples if (k := error_kind(s[2], s[3])))),
        "server_5xx": sum(1 for s in samples if s[2] >= 500),
        "accepted": len(accepted),
        "stored": len(accepted & stored),
        "lost": len(accepted - stored),
        "stored_unacknowledged": len(stored - accepted),
        "answered_stored_true": answered_new,  # each event id is new: every 201 must say so
        "versions_before": dict(before),
        "versions_after": dict(after),
        "seconds_to_new_version": swap["seconds_to_new_version"],
        "old_version_after_swap": swap["old_version_after_swap"],
    }


def report(args: argparse.Namespace, load: dict[str, Any], res: dict[str, Any]) -> list[str]:
    lines = [
        f"{'endpoint':<30}{'requests':>9}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
        f"{'max ms':>9}  errors"
    ]
    for r in res["rows"]:
        errors = ", ".join(f"{k} {n}" for k, n in r["errors"].items()) or "none"
        lines.append(
            f"{r['endpoint']:<30}{r['requests']:>9}{r['req_s']:>8.1f}{r['p50_ms']:>9.1f}"
            f"{r['p95_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['max_ms']:>9.1f}  {errors}"
        )
    total = sum(r["requests"] for r in res["rows"])
    imp = load["health"]["impressions"]
    lines += [
        f"{'all':<30}{total:>9}{total / args.seconds:>8.1f} (requests sent per second)",
        "",
        f"errors by kind: {res['errors'] or 'none'}; HTTP 5xx: {res['server_5xx']}",
        f"events: accepted (201) {res['accepted']}, stored {res['stored']}, lost {res['lost']}, "
        f"stored without an answer {res['stored_unacknowledged']}",
        f"events answered stored: true {res['answered_stored_true']} of {res['accepted']} new",
        f"swap v{load['old']} -> v{load['new']} at {args.seconds / 2:.0f} s: first answer from the "
        f"new version {res['seconds_to_new_version']:.2f} s after the alias move; "
        f"{res['old_version_after_swap']} old-version answers started after it",
        f"versions answered before the move {res['versions_before']}, in requests started after "
        f"the first new answer {res['versions_after']}",
        f"server: reloads {load['health']['reloads']}, reload errors "
        f"{load['health']['reload_errors']}, impressions written {imp['written']} / dropped "
        f"{imp['dropped']} / failed {imp['failed']} (before shutdown)",
        f"state cache of v{load['new']}: {load['state_hits']:.0f} hits, "
        f"{load['state_misses']:.0f} misses "
        f"({100 * load['state_hits'] / max(load['state_hits'] + load['state_misses'], 1):.1f}% "
        "of its answers skipped the forward pass)",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the load")
    parser.add_argument("--event-share", type=float, default=0.3, help="share of POST /events")
    parser.add_argument("--poll-seconds", type=float, default=1.0, help="the server's polling")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of the served model")
    parser.add_argument("--users", type=int, default=200, help="synthetic users")
    parser.add_argument("--movielens", action="store_true", help="MovieLens-100K, not synthetic")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "recsys-bench")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-mlflow", action="store_true", help="print only")
    parser.add_argument(
        "--store-url", help="the event store, e.g. a PostgreSQL database (default: SQLite in home)"
    )
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="recsys-bench-load-"))
    env = {"RECSYS_HOME": str(home)} | (
        {"RECSYS_EVENT_STORE_URL": args.store_url} if args.store_url else {}
    )
    settings = Settings.from_env(env)
    os.environ.update(child_env(settings))  # log_benchmark logs into the same home
    t0 = time.perf_counter()
    if args.movielens:
        build_champion(settings, args.epochs, args.cache)
    else:
        build_synthetic_champion(settings, args.epochs, args.users)
    print(f"setup: champion trained in {home} in {time.perf_counter() - t0:.0f} s", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))  # so the server stops too
    with ExitStack() as stack:
        load = run_load(args, settings, work, stack)
    res = analyse(settings, load)
    data = "MovieLens-100K" if args.movielens else f"synthetic ({args.users} users)"
    print(
        f"\nrecsys load: {args.clients} clients for {args.seconds:g} s, {os.cpu_count()} cores, "
        f"{data}, {args.event_share:.0%} events, poll {args.poll_seconds:g} s; log {load['log']}"
    )
    print("\n".join(report(args, load, res)))
    if not args.no_mlflow:
        from common import log_benchmark

        metrics = {
            f"{'events' if r['endpoint'] == EVENTS else 'recs'}.{key}": r[key]
            for r in res["rows"]
            for key in ("requests", "req_s", "p50_ms", "p95_ms", "p99_ms", "max_ms")
        }
        metrics |= {k: v for k, v in res.items() if isinstance(v, int | float)}
        metrics |= {f"errors.{k}": n for k, n in res["errors"].items()}
        params = {k: v for k, v in vars(args).items() if k != "cache"}
        params |= {"cpus": os.cpu_count(), "from_version": load["old"], "to_version": load["new"]}
        rows = [{**r, "errors": json.dumps(r["errors"])} for r in res["rows"]]
        run_id = log_benchmark("load", params, metrics, tables={"load": rows})
        print(f"logged to MLflow run {run_id} (experiment bench-load, {settings.tracking_uri})")
    if res["server_5xx"] or res["lost"] or res["answered_stored_true"] != res["accepted"]:
        sys.exit(
            f"FAILED: {res['server_5xx']} HTTP 5xx, {res['lost']} lost events, "
            f"{res['accepted'] - res['answered_stored_true']} new events answered stored: false"
        )


if __name__ == "__main__":
    main()
