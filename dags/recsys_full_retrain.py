"""
### recsys_full_retrain

Weekly (and on demand): **train** the transformer recommender from scratch on the latest features
snapshot, **evaluate** it (full-ranking HR@10 / NDCG@10, leave-last-out, plus the popularity
baseline), **register** it as a new version of `recsys` with alias `challenger`, and **promote** it
to `champion` only if it beats the current champion on the same evaluation data.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag

from recsys.dag_tasks import release, task_defaults, training_params


@dag(
    dag_id="recsys_full_retrain",
    schedule="@weekly",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=8),
    default_args=task_defaults(1, timedelta(minutes=1), timeout=timedelta(hours=1)),
    tags=["recsys", "training"],
    params=training_params("full"),
    doc_md=__doc__,
)
def recsys_full_retrain() -> None:
    release("full")


recsys_full_retrain()
