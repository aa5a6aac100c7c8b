"""
### recsys_online_guard

Hourly: compare the live champion's online click-through rate (served lists joined with the clicks
that name their request id) with its predecessor's, and **roll `champion` back** when it dropped by
more than the configured share with significance (`[online]` in
`recsys/release/promotion.toml`). Its 5% is spent over the hourly looks, so a version no worse is
rolled back at most 5% of the time however long it stays live. The rollback is recorded in the
alias log like any other move (`recsys registry history`).

Its **freshness check** fails the run (red, no retries) while the live model's training data trails
the newest validated data by more than `[freshness] max_lag_hours` (48 h by default: for example
two days of rejected fine-tunes). `recsys registry` and the API's `/health` show the same lag.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag

from recsys.dag_tasks import freshness_check, online_guard, task_defaults


@dag(
    dag_id="recsys_online_guard",
    schedule="@hourly",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=50),
    default_args=task_defaults(2, timedelta(minutes=1), timeout=timedelta(minutes=10)),
    tags=["recsys", "promotion"],
    doc_md=__doc__,
)
def recsys_online_guard() -> None:
    online_guard()
    freshness_check()  # independent: a stale model must not stop the rollback check


recsys_online_guard()
