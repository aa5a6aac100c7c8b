"""Airflow tasks, shared by the DAG files in ``dags/``.

Each task builds ``Settings`` from the environment, calls one library function and returns a small
dict (ids and paths, never data) through XCom. Heavy libraries are imported inside the task bodies:
importing this module costs only ``airflow.sdk``, which the DAG files import anyway.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Asset, BaseNotifier, Param, get_current_context, task

from recsys.config import TRAINING_POOL, PipelineConfig

TRAINING_TAGS = ("dag_id", "run_id", "logical_date")
# Updated by recsys_ingest when a snapshot changed; triggers recsys_incremental_finetune.
FEATURES = Asset("recsys_features")

# The longest time budget a trigger may give training; the train task's own limit leaves room
# for loading the snapshot and logging the model after it.
MAX_TRAIN_SECONDS = 4 * 3600
TRAIN_TIMEOUT = timedelta(seconds=MAX_TRAIN_SECONDS) + timedelta(hours=1)

# Trigger-form settings of the training DAGs: Param name -> (JSON schema, what it sets). Each one
# overrides the field of the same name in the mode's TrainConfig preset; null keeps the preset.
TRAINING_SETTINGS: dict[str, tuple[dict[str, Any], str]] = {
    "epochs": ({"type": ["null", "integer"], "minimum": 1, "maximum": 10_000},
               "Maximum training epochs"),
    "lr": ({"type": ["null", "number"], "exclusiveMinimum": 0, "maximum": 1}, "Learning rate"),
    "batch_size": ({"type": ["null", "integer"], "minimum": 1, "maximum": 65_536},
                   "Sequences per training batch"),
    "max_seconds": ({"type": ["null", "number"], "exclusiveMinimum": 0,
                     "maximum": MAX_TRAIN_SECONDS}, "Time budget of training, in seconds"),
    "seed": ({"type": ["null", "integer"], "minimum": 0, "maximum": 2**31 - 1},
             "Random seed (weights, sampling, dropout)"),
}  # fmt: skip


class TaskFailed(BaseNotifier):
    """A task that failed for good (retries spent) posts a notice (``recsys.release.notify``):
    a quarantined partition as such, anything else with its error."""

    def notify(self, context: Any) -> None:
        from recsys.release import notify

        ti, error = context["ti"], context.get("exception")
        kind = "quarantine" if ti.task_id == "quarantine_alert" else "task_failed"
        title = f"{ti.dag_id}.{ti.task_id} failed ({context['dag_run'].run_id})"
        fields = {"try": str(ti.try_number)}
        notify.send(notify.Notice(kind, title, f"{type(error).__name__}: {error}", fields))


def task_defaults(retries: int, retry_delay: timedelta, timeout: timedelta) -> dict[str, Any]:
    """Every task: a time limit, retries whose delay doubles each time (capped), and a notice
    when it fails for good."""
    return {
        "retries": retries,
        "retry_delay": retry_delay,
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": timeout,
        "on_failure_callback": [TaskFailed()],
    }


def _settings() -> Any:
    from recsys.config import Settings

    return Settings.from_env()


def _skip(reason: str) -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    raise AirflowSkipException(reason)


def _interval() -> Any:
    """The run's data interval; refuse runs that have none (a manual trigger without a date)."""
    from airflow.sdk.exceptions import AirflowFailException

    from recsys.data.lake import Interval

    ctx = get_current_context()
    start, end = ctx.get("data_interval_start"), ctx.get("data_interval_end")
    if start is None or end is None or start == end:
        raise AirflowFailException(
            "this run has no data interval, so there is no partition to collect; trigger "
            "recsys_ingest with a logical date or use `airflow backfill create`"
        )
    return Interval.parse(start, end)


def _run_context() -> dict[str, str]:
    ctx = get_current_context()
    dag_run = ctx["dag_run"]
    return {
        "dag_id": dag_run.dag_id,
        "run_id": dag_run.run_id,
        "logical_date": str(ctx.get("logical_date") or ""),
    }


@task
def collect() -> dict[str, Any]:
    """Copy the events ingested in this data interval from the event store into staging."""
    from recsys.data import ingest

    return ingest.collect_step(_settings(), _interval())


@task
def validate(collected: dict[str, Any]) -> dict[str, Any]:
    """Gate the partition with the Great Expectations suite; quarantine it if it fails."""
    from recsys.data import ingest

    result = ingest.validate_step(_settings(), _interval())
    if ingest.STOPPED in result:
        _skip(result[ingest.STOPPED])
    return result


@task(trigger_rule="all_done")
def quarantine_alert() -> dict[str, Any]:
    """Fail the run, visibly red and with a notice, when this interval's partition was
    quarantined. Only this task fails: build_features is skipped, so the days after still build."""
    from airflow.sdk.exceptions import AirflowFailException

    from recsys.data.quarantine import list_quarantined

    interval = _interval()
    found = [q for q in list_quarantined(_settings()) if q["interval"] == interval.id]
    if found:
        q = found[0]
        raise AirflowFailException(
            f"partition {q['interval']} QUARANTINED: {q['summary']}; rows at {q['path']}, report "
            f"at {q['data_docs'] or q['report']}. Fix the data, or `recsys quarantine release "
            f"{q['interval']}` (--exclude-bad-rows), then clear this run"
        )
    return {"interval": interval.id, "quarantined": False}


@task
def online_ctr() -> list[dict[str, Any]]:
    """Join clicks with the lists served in this interval (and the one before, now final): the
    online CTR per model version, kept in the lake under ``online/ctr/<interval>/``."""
    import datetime as dt

    from recsys.data import impressions

    settings = _settings()
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    return impressions.collect_ctr(settings.event_store_url, settings.lake_root, _interval(), now)


@task
def build_features(validated: dict[str, Any]) -> dict[str, Any]:
    """Rebuild per-user sequences and grow the item index; publishes the features Asset."""
    from recsys.data import ingest

    result = ingest.features_step(_settings(), _interval(), validated)
    if ingest.STOPPED in result:  # nothing new to train on: the Asset is not updated
        _skip(result[ingest.STOPPED])
    return result


def training_config(mode: str, params: dict[str, Any]) -> PipelineConfig:
    """The mode's preset, with whatever of ``TRAINING_SETTINGS`` a trigger set (not null)."""
    changes = {k: v for k, v in params.items() if k in TRAINING_SETTINGS and v is not None}
    return PipelineConfig().with_training(mode, **changes)


@task(pool=TRAINING_POOL, execution_timeout=TRAIN_TIMEOUT)
def train(mode: str) -> dict[str, Any]:
    """Train a model (full or incremental) and log it as an MLflow run."""
    from recsys.release import pipeline

    cfg = training_config(mode, get_current_context()["params"])
    result = pipeline.train(_settings(), mode=mode, cfg=cfg, context=_run_context())
    if result.get("skipped"):
        _skip(result["reason"])
    return result


@task
def evaluate(trained: dict[str, Any]) -> dict[str, Any]:
    """Full-ranking HR@10 / NDCG@10 of the model and of the popularity baseline."""
    from recsys.release import pipeline

    return pipeline.evaluate(_settings(), trained["run_id"])


@task
def register(evaluated: dict[str, Any]) -> dict[str, Any]:
    """Register the model as a new version with alias ``challenger``."""
    from recsys.release import pipeline

    return pipeline.register(_settings(), evaluated["run_id"])


@task(pool=TRAINING_POOL)
def promote(registered: dict[str, Any]) -> dict[str, Any]:
    """Move ``champion`` to the challenger only if it beats the champion on the same data."""
    from recsys.release import promote as stage

    return stage.run(_settings(), registered["version"])


def training_params(mode: str) -> dict[str, Param]:
    """Params a manual trigger of a training DAG may set: validated by Airflow, shown in its
    trigger form with the mode's preset as the default it keeps when left empty."""
    preset = PipelineConfig().training(mode)
    return {
        name: Param(None, **schema, description=f"{what} (empty: {getattr(preset, name)})")
        for name, (schema, what) in TRAINING_SETTINGS.items()
    }


def release(mode: str) -> Any:
    """train -> evaluate -> register -> promote, the chain both training DAGs run."""
    return promote(register(evaluate(train(mode))))


@task(pool=TRAINING_POOL)  # a rollback must not race a promotion
def online_guard() -> dict[str, Any]:
    """Roll ``champion`` back if its online CTR dropped clearly below its predecessor's."""
    from recsys.release import online_guard as guard

    return guard.check(_settings())  # logs a warning, and records the move, when it rolls back


@task
def freshness_check() -> dict[str, Any]:
    """Fail, without retries, while the live model trails the newest validated data by more than
    ``[freshness] max_lag_hours``: the run turns red until a fine-tune or retrain is promoted."""
    from airflow.sdk.exceptions import AirflowFailException

    from recsys.release import freshness

    try:
        return freshness.check(_settings())
    except freshness.StaleModelError as err:
        raise AirflowFailException(str(err)) from err
