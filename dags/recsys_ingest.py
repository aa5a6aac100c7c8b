"""
### recsys_ingest

For each data interval (daily): **collect** the events *ingested* in the interval from the event
store into a raw Parquet partition, **validate** it with the Great Expectations suite
`expectations/raw_events.json` (a failing partition is quarantined with its report and downstream
work stops; **quarantine_alert** then fails, so the run is red and a notice goes out, while the
features chain is skipped, not failed, and the days after still build), then **build features**:
per-user time-ordered sequences and the stable item index.
Features are cumulative (a snapshot holds every partition up to its interval's end, and the item
index grows in the order they are built), so **build_features depends on its past**: runs collect
and validate side by side, but an interval's features wait until the previous interval's succeeded
or were skipped. A failed day holds the features of the days after it until it is re-run.
A successful run updates the `recsys_features` Asset, which triggers `recsys_incremental_finetune`.
Beside it, **online_ctr** joins the clicks with the lists the API served in the interval: the
click-through rate per model version, under `online/ctr/<interval>/` in the lake.

Re-running an interval rewrites the same partition. Backfill with `airflow backfill create
--dag-id recsys_ingest --from-date 1997-09-20 --to-date 1997-10-18 --reprocess-behavior failed`
(Airflow requires a reprocess behavior for a DAG with depends_on_past; `completed` re-runs
intervals already collected).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import CronDataIntervalTimetable, dag

from recsys.dag_tasks import (
    FEATURES,
    build_features,
    collect,
    online_ctr,
    quarantine_alert,
    task_defaults,
    validate,
)


@dag(
    dag_id="recsys_ingest",
    # A data-interval timetable: each run owns [start, end). (A plain "@daily" is a trigger
    # timetable in Airflow 3, whose runs have an empty data interval.)
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(1995, 1, 1, tz="UTC"),  # earliest date a backfill can reach
    catchup=False,
    max_active_runs=2,
    dagrun_timeout=timedelta(hours=6),
    default_args=task_defaults(2, timedelta(seconds=30), timeout=timedelta(hours=1)),
    tags=["recsys", "data"],
    doc_md=__doc__,
)
def recsys_ingest() -> None:
    validated = validate(collect())
    build_features.override(outlets=[FEATURES], depends_on_past=True)(validated)
    validated >> quarantine_alert()  # red run and a notice; the features chain stays skipped
    online_ctr()


recsys_ingest()
