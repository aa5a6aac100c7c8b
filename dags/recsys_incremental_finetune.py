"""
### recsys_incremental_finetune

Triggered by the `recsys_features` Asset (every successful `recsys_ingest` run): **warm-start**
from the `champion` model and fine-tune briefly on the users with new events (new items get new
embedding rows), then evaluate, register and run the same promotion step as the full retrain.
With no champion yet, or no data newer than the champion's, it says so and skips.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag

from recsys.dag_tasks import FEATURES, release, task_defaults, training_params


@dag(
    dag_id="recsys_incremental_finetune",
    schedule=[FEATURES],
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=8),
    default_args=task_defaults(1, timedelta(minutes=1), timeout=timedelta(hours=1)),
    tags=["recsys", "training"],
    params=training_params("incremental"),
    doc_md=__doc__,
)
def recsys_incremental_finetune() -> None:
    release("incremental")


recsys_incremental_finetune()
