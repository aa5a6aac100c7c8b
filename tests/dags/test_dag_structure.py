"""Every DAG file loads, imports nothing heavy at parse time, and has the documented shape."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"

HEAVY = ("torch", "mlflow", "great_expectations", "pandas")
DAG_FILES = sorted(DAGS.glob("*.py"))


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(DAGS))


def test_every_file_loads_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {
        "recsys_ingest",
        "recsys_full_retrain",
        "recsys_incremental_finetune",
        "recsys_online_guard",
    }


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_parsing_imports_no_heavy_library(path):
    code = (
        "import json, runpy, sys; runpy.run_path(sys.argv[1]);"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize(
    "dag_id,schedule,tags,tasks",
    [
        (
            "recsys_ingest",
            "CronDataIntervalTimetable 0 0 * * *",
            {"recsys", "data"},
            {
                ("collect", "validate"),
                ("validate", "build_features"),
                ("validate", "quarantine_alert"),
            },  # and online_ctr alone
        ),
        (
            "recsys_full_retrain",
            "CronTriggerTimetable 0 0 * * 0",
            {"recsys", "training"},
            {("train", "evaluate"), ("evaluate", "register"), ("register", "promote")},
        ),
        (
            "recsys_incremental_finetune",
            "AssetTriggeredTimetable",
            {"recsys", "training"},
            {("train", "evaluate"), ("evaluate", "register"), ("register", "promote")},
        ),
        ("recsys_online_guard", "CronTriggerTimetable 0 * * * *", {"recsys", "promotion"}, set()),
    ],
)
def test_dag_shape(dagbag, dag_id, schedule, tags, tasks):
    dag = dagbag.dags[dag_id]
    timetable = dag.timetable
    assert f"{type(timetable).__name__} {getattr(timetable, 'expression', '')}".strip() == schedule
    assert tags <= set(dag.tags)
    edges = {(t.task_id, d) for t in dag.tasks for d in t.downstream_task_ids}
    assert edges == tasks
    assert all(t.retries >= 1 for t in dag.tasks)
    assert dag.doc_md and "###" in dag.doc_md


@pytest.mark.parametrize(
    "dag_id",
    ["recsys_ingest", "recsys_full_retrain", "recsys_incremental_finetune", "recsys_online_guard"],
)
def test_every_task_has_a_time_limit_and_backs_off(dagbag, dag_id):
    from datetime import timedelta

    from recsys.dag_tasks import TaskFailed

    dag = dagbag.dags[dag_id]
    assert dag.dagrun_timeout is not None
    for t in dag.tasks:
        assert t.execution_timeout is not None and t.execution_timeout <= dag.dagrun_timeout
        assert t.retry_exponential_backoff >= 2 and t.max_retry_delay is not None, t.task_id
        # The delay doubles: the second retry waits longer than the first, up to the cap.
        assert t.retry_delay * 2 <= t.max_retry_delay <= timedelta(hours=1)
        assert any(isinstance(c, TaskFailed) for c in t.on_failure_callback), t.task_id
    if dag_id == "recsys_online_guard":  # hourly: a run ends before the next one is due
        assert dag.dagrun_timeout < timedelta(hours=1)


def test_ingest_publishes_the_features_asset_that_triggers_finetuning(dagbag):
    ingest = dagbag.dags["recsys_ingest"]
    outlets = ingest.get_task("build_features").outlets
    assert [a.name for a in outlets] == ["recsys_features"]
    finetune = dagbag.dags["recsys_incremental_finetune"]
    assert "recsys_features" in str(finetune.timetable.asset_condition)


@pytest.mark.parametrize("dag_id", ["recsys_full_retrain", "recsys_incremental_finetune"])
def test_training_dags_train_and_promote_one_at_a_time(dagbag, dag_id):
    """One run per training DAG, and a one-slot pool shared by both DAGs' train and promote."""
    from recsys.config import TRAINING_POOL

    dag = dagbag.dags[dag_id]
    assert dag.max_active_runs == 1
    pools = {t.task_id: t.pool for t in dag.tasks}
    assert pools["train"] == pools["promote"] == TRAINING_POOL


def test_the_online_guard_rolls_back_in_the_training_pool(dagbag):
    """Its rollback moves champion: it must not run while a promotion does."""
    from recsys.config import TRAINING_POOL

    tasks = {t.task_id: t for t in dagbag.dags["recsys_online_guard"].tasks}
    assert set(tasks) == {"online_guard", "freshness_check"}
    assert tasks["online_guard"].pool == TRAINING_POOL
    assert not tasks["freshness_check"].upstream_task_ids  # a stale model must not stop it


def test_ingest_builds_features_in_date_order_and_collects_in_parallel(dagbag):
    """Features are cumulative: each interval's wait for the previous interval's (a backfill would
    otherwise race), while collecting and validating may run side by side."""
    ingest = dagbag.dags["recsys_ingest"]
    assert {t.task_id for t in ingest.tasks if t.depends_on_past} == {"build_features"}
    assert ingest.max_active_runs > 1


def test_ingest_joins_clicks_with_impressions_beside_the_features_chain(dagbag):
    ingest = dagbag.dags["recsys_ingest"]
    task = ingest.get_task("online_ctr")
    assert task.upstream_task_ids == set() and task.downstream_task_ids == set()
    assert task.retries >= 1


BAD_PARAMS = [
    ("epochs", [0, -3, "ten", 10**6, 2.5]),
    ("lr", [0, -0.1, 2, "fast"]),
    ("batch_size", [0, 1.5, 10**6, "big"]),
    ("max_seconds", [0, -1, 10**6, "1h"]),
    ("seed", [-1, 2**31, 0.5, "lucky"]),
]
GOOD_PARAMS = {"epochs": 5, "lr": 0.002, "batch_size": 32, "max_seconds": 90.5, "seed": 7}


@pytest.mark.parametrize("name,bad", [(n, b) for n, values in BAD_PARAMS for b in values])
@pytest.mark.parametrize("dag_id", ["recsys_full_retrain", "recsys_incremental_finetune"])
def test_invalid_manual_trigger_params_are_refused(dagbag, dag_id, name, bad):
    import copy

    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(dagbag.dags[dag_id].params)
    with pytest.raises(ParamValidationError, match=name):
        params[name] = bad
    params[name] = GOOD_PARAMS[name]
    assert params.validate()[name] == GOOD_PARAMS[name]


@pytest.mark.parametrize("mode", ["full", "incremental"])
def test_the_trigger_form_shows_each_setting_and_a_trigger_sets_it(dagbag, mode):
    import dataclasses

    from recsys.config import PipelineConfig
    from recsys.dag_tasks import TRAIN_TIMEOUT, training_config

    dag_id = "recsys_full_retrain" if mode == "full" else "recsys_incremental_finetune"
    params = dagbag.dags[dag_id].params
    preset = PipelineConfig().training(mode)
    assert set(params) == set(GOOD_PARAMS)
    for name in GOOD_PARAMS:
        assert params.get_param(name).value is None  # empty: the preset decides
        assert f"(empty: {getattr(preset, name)})" in params.get_param(name).description
    empty = {name: None for name in GOOD_PARAMS}
    assert training_config(mode, empty) == PipelineConfig()
    cfg = training_config(mode, {**empty, **GOOD_PARAMS, "unrelated": 1})
    assert cfg.training(mode) == dataclasses.replace(preset, **GOOD_PARAMS)
    other = "incremental" if mode == "full" else "full"
    assert cfg.training(other) == PipelineConfig().training(other)  # the other preset untouched
    # The train task outlives the longest time budget a trigger may give it.
    limit = params.get_param("max_seconds").schema["maximum"]
    assert dagbag.dags[dag_id].get_task("train").execution_timeout.total_seconds() > limit
    assert TRAIN_TIMEOUT.total_seconds() > limit
