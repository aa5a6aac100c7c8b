"""Ingest benchmark: collect + validate + features on synthetic events, day by day.

    .venv/bin/python bench/ingest.py --events 1000000 --days 10

Prints events/s per stage and end to end, the share of time spent inside Great Expectations, and
peak memory. Setup (generating events and loading the event store) is timed separately and is not
part of the throughput. Numbers depend on the machine: compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from recsys.config import Settings
from recsys.data import collect, events, features, suites, synthetic, validate
from recsys.data.lake import Interval

START = dt.datetime(2024, 1, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--home", type=Path, help="state folder (default: a temporary one)")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="recsys-bench-"))
    settings = Settings.from_env({"RECSYS_HOME": str(home)})

    t0 = time.perf_counter()
    per_user = 20
    records = synthetic.generate(
        n_users=args.events // per_user,
        n_items=max(100, args.events // 200),
        events_per_user=(per_user, per_user),
        days=args.days,
        seed=1,
    )
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    store = events.EventStore(settings.event_store_url)
    store.append(events.prepare_rows(records))
    t_load = time.perf_counter() - t0
    n = store.count()
    del records

    gx_seconds = 0.0
    real_validate_frame = validate.validate_frame

    def timed_validate_frame(*a, **kw):  # measure the time spent inside Great Expectations
        nonlocal gx_seconds
        t = time.perf_counter()
        try:
            return real_validate_frame(*a, **kw)
        finally:
            gx_seconds += time.perf_counter() - t

    validate.validate_frame = suites.validate_frame = timed_validate_frame  # the gate, features
    stages: dict[str, float] = defaultdict(float)
    for d in range(args.days):
        interval = Interval(START + dt.timedelta(days=d), START + dt.timedelta(days=d + 1))
        for name, stage in (("collect", collect), ("validate", validate), ("features", features)):
            t = time.perf_counter()
            result = stage.run(settings, interval)
            stages[name] += time.perf_counter() - t
            if name == "validate" and not result["success"]:
                raise SystemExit(f"{interval.id} failed validation: {result['summary']}")
    total = sum(stages.values())
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    print(f"\nrecsys ingest benchmark: {n:,} events over {args.days} daily partitions")
    print(f"setup (not timed below): generate {t_gen:.1f} s, load event store {t_load:.1f} s")
    print(f"{'stage':<22}{'seconds':>10}{'events/s':>14}{'share':>9}")
    for name, seconds in stages.items():
        print(f"{name:<22}{seconds:>10.1f}{n / seconds:>14,.0f}{seconds / total:>9.1%}")
    print(f"{'  of which GX':<22}{gx_seconds:>10.1f}{'':>14}{gx_seconds / total:>9.1%}")
    print(f"{'end to end':<22}{total:>10.1f}{n / total:>14,.0f}{1:>9.1%}")
    print(f"peak memory (whole process, setup included): {peak_gib:.2f} GiB")


if __name__ == "__main__":
    main()
