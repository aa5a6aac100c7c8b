"""End to end through `dag.test()`: ingest -> full retrain -> incremental fine-tune, and the
quarantine path. (`dag.test()` returns a failed run instead of raising: assert on its state.)"""

import datetime as dt
import json

import pandas as pd
import pendulum
import pytest

from recsys.data import events, synthetic
from recsys.data.lake import EVENTS, Interval, Lake
from recsys.release import notify
from tests.helpers.webhook import webhook

pytestmark = pytest.mark.slow

START = dt.datetime(2024, 1, 1)


@pytest.fixture
def settings(backend_settings):
    """The event store on SQLite, then PostgreSQL (the production backend)."""
    return backend_settings


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag()


def _states(run):
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def _ingest(dagbag, day: int):
    """Run recsys_ingest for the interval [START + day, START + day + 1)."""
    run = dagbag.dags["recsys_ingest"].test(
        logical_date=pendulum.instance(START + dt.timedelta(days=day + 1), tz="UTC")
    )
    assert Interval.parse(run.data_interval_start, run.data_interval_end) == Interval(
        START + dt.timedelta(days=day), START + dt.timedelta(days=day + 1)
    )
    return run


def test_ingest_retrain_finetune_loop(airflow_db, settings, dagbag, tmp_path, monkeypatch):
    from recsys.config import CHAMPION
    from recsys.registry.client import Registry
    from recsys.release.policy_file import DEFAULT_CONFIG

    store = events.EventStore(settings.event_store_url)
    store.append(events.prepare_rows(synthetic.generate(n_users=120, n_items=80, days=5)))
    for day in range(4):
        run = _ingest(dagbag, day)
        assert run.state == "success"
        assert set(_states(run).values()) == {"success"}
    assert len(Lake(settings.lake_root).partitions("raw")) == 4

    run = dagbag.dags["recsys_full_retrain"].test(run_conf={"epochs": 15})
    assert run.state == "success", _states(run)
    reg = Registry(settings)
    champion = reg.alias(CHAMPION)
    assert champion is not None and champion.tags["promotion.decision"] == "promoted"
    assert float(champion.tags["test.ndcg_at_10"]) > 0
    page = champion.description  # the version page names the DAG run that made it
    assert "DAG `recsys_full_retrain`" in page and "all validated by Great" in page

    run = dagbag.dags["recsys_incremental_finetune"].test()
    assert run.state == "success"
    assert _states(run)["train"] == "skipped"  # no data newer than the champion's yet

    assert _ingest(dagbag, 4).state == "success"
    # The champion now trails the newest validated data by a day: within the 48 h objective...
    guard = dagbag.dags["recsys_online_guard"]
    run = guard.test()
    assert run.state == "success", _states(run)
    # ...but not within 12 h: the guard's run fails, visibly, while the rollback check still ran.
    strict = DEFAULT_CONFIG.read_text().replace("max_lag_hours = 48.0", "max_lag_hours = 12.0")
    (tmp_path / "promotion.toml").write_text(strict)
    monkeypatch.setenv("RECSYS_PROMOTION_CONFIG", str(tmp_path / "promotion.toml"))
    run = guard.test()
    assert run.state == "failed"
    assert _states(run) == {"online_guard": "success", "freshness_check": "failed"}
    monkeypatch.delenv("RECSYS_PROMOTION_CONFIG")

    run = dagbag.dags["recsys_incremental_finetune"].test()
    assert run.state == "success" and set(_states(run).values()) == {"success"}, _states(run)
    versions = reg.versions()
    assert len(versions) == 2
    finetuned = versions[-1]
    assert finetuned.tags["recsys.mode"] == "incremental"
    assert finetuned.tags["recsys.parent_version"] == str(champion.version)
    assert finetuned.tags["promotion.decision"] in {"promoted", "rejected"}
    assert "challenger" in reg.version(finetuned.version).aliases
    # The fine-tune replayed old users and was checked for forgetting on a fixed old slice.
    ft_run = reg.run(finetuned.run_id).data
    assert int(ft_run.params["data.n_replayed_sequences"]) > 0
    assert int(ft_run.params["data.n_old_slice_users"]) > 0
    for key in ("test_new.ndcg_at_10", "test_old.ndcg_at_10", "parent.test_old.ndcg_at_10"):
        assert 0.0 <= ft_run.metrics[key] <= 1.0
    assert ft_run.metrics["forgetting.old_ndcg_drop"] == pytest.approx(
        ft_run.metrics["parent.test_old.ndcg_at_10"] - ft_run.metrics["test_old.ndcg_at_10"]
    )
    assert not list((settings.home / "training-state").glob("*.pt"))  # removed once logged

    run = dagbag.dags["recsys_incremental_finetune"].test()  # same data, same champion: no twin
    assert run.state == "success" and _states(run)["train"] == "skipped"
    assert len(reg.versions()) == 2


def test_bad_partition_is_quarantined_and_stops_downstream(
    airflow_db, settings, dagbag, monkeypatch
):
    store = events.EventStore(settings.event_store_url)
    good = synthetic.generate(n_users=20, n_items=30, days=1)
    bad = [
        {
            "event_id": "no-user",
            "user_id": None,
            "item_id": "i1",
            "event_time": "2024-01-01T10:00:00",
        },
        {
            "event_id": "bad-time",
            "user_id": "u1",
            "item_id": "i1",
            "event_time": "31/02/2024 25:61",
            "ingested_at": "2024-01-01T11:00:00",
        },
    ]
    # More bad rows than the gate rejects one by one (GatePolicy: 1% of a partition).
    bad += [{**bad[0], "event_id": f"no-user-{k}"} for k in range(len(good) // 20)]
    store.append(events.prepare_rows(good + bad))
    before = store.count()

    notices = []
    with webhook(notices) as url:
        monkeypatch.setenv(notify.ENV_WEBHOOK, url)
        run = _ingest(dagbag, 0)
    states = _states(run)
    assert states["collect"] == "success"
    assert states["validate"] == "skipped" and states["build_features"] == "skipped"
    # Red, not green: the alert fails (features skipped, so the next days still build).
    assert run.state == "failed" and states["quarantine_alert"] == "failed"
    assert states["online_ctr"] == "success"
    (notice,) = notices
    assert notice["kind"] == "quarantine" and "recsys_ingest.quarantine_alert" in notice["title"]
    assert "QUARANTINED" in notice["text"] and "recsys quarantine release" in notice["text"]
    lake = Lake(settings.lake_root)
    assert lake.partitions("raw") == [] and len(lake.partitions("quarantine")) == 1
    kept = pd.read_parquet(lake.partition("quarantine", lake.partitions("quarantine")[0]) / EVENTS)
    assert len(kept) == before and {"no-user", "bad-time"} <= set(kept["event_id"])
    assert store.count() == before
    assert not lake.latest_path.exists()  # no features were built from bad data


def test_rerunning_collected_intervals_reproduces_byte_identical_features(
    airflow_db, settings, dagbag
):
    from recsys.data.features import INTERACTIONS

    events.EventStore(settings.event_store_url).append(
        events.prepare_rows(synthetic.generate(n_users=30, n_items=20, days=2))
    )
    lake = Lake(settings.lake_root)
    snapshots = []
    for _ in range(2):
        for day in range(2):
            assert _ingest(dagbag, day).state == "success"
        snapshots.append(
            [(lake.snapshot(iv) / INTERACTIONS).read_bytes() for iv in lake.partitions("raw")]
        )
    assert len(snapshots[0]) == 2 and snapshots[0] == snapshots[1]
    rerun = _ingest(dagbag, 1)  # unchanged features: the Asset is not updated, nothing retrains
    assert _states(rerun)["build_features"] == "skipped"


def _set_state(dag_id: str, run_id: str, task_id: str, state: str) -> None:
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import update

    with create_session() as session:
        session.execute(
            update(TaskInstance)
            .where(TaskInstance.dag_id == dag_id)
            .where(TaskInstance.run_id == run_id)
            .where(TaskInstance.task_id == task_id)
            .values(state=state)
        )


def _ingest_states(day: int) -> tuple[str | None, dict[str, str | None]]:
    """(run id, task states) of the latest recsys_ingest run of ``day``, from the metadata DB."""
    from airflow.models import DagRun, TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    logical = pendulum.instance(START + dt.timedelta(days=day + 1), tz="UTC")
    runs = select(DagRun.run_id).where(
        DagRun.dag_id == "recsys_ingest", DagRun.logical_date == logical
    )
    with create_session() as session:
        run_id = session.scalars(runs.order_by(DagRun.id.desc())).first()
        tasks = select(TaskInstance.task_id, TaskInstance.state).where(
            TaskInstance.dag_id == "recsys_ingest", TaskInstance.run_id == run_id
        )
        return run_id, {task: state for task, state in session.execute(tasks)}


def test_an_interval_builds_its_features_only_after_the_interval_before_it(
    airflow_db, settings, dagbag
):
    """Backfill runs collect side by side, but day 1's features wait for day 0's: cumulative
    features built first would miss day 0's partition (a race seen in the demo's backfill)."""
    import threading
    import time

    from sqlalchemy.exc import OperationalError

    from recsys.data.features import MANIFEST

    events.EventStore(settings.event_store_url).append(
        events.prepare_rows(synthetic.generate(n_users=30, n_items=20, days=2))
    )
    day0 = _ingest(dagbag, 0)
    assert day0.state == "success"
    # Day 0's features are in flight again, as when a backfill runs both days at once.
    _set_state("recsys_ingest", day0.run_id, "build_features", "running")

    earlier_run, _ = _ingest_states(1)  # an earlier test's run of day 1, replaced by dag.test()
    seen: list[dict[str, str | None]] = []

    def this_run() -> dict[str, str | None]:
        run_id, states = _ingest_states(1)
        return states if run_id != earlier_run else {}

    def release_day0() -> None:
        """Once day 1 is validated, watch its features for 5 s, then let day 0's finish."""
        try:
            deadline = time.monotonic() + 120
            while this_run().get("validate") != "success" and time.monotonic() < deadline:
                time.sleep(0.2)
            for _ in range(10):
                seen.append(this_run())
                time.sleep(0.5)
        finally:
            for _ in range(40):  # SQLite: dag.test() may hold the write lock for a moment
                try:
                    _set_state("recsys_ingest", day0.run_id, "build_features", "success")
                    break
                except OperationalError:
                    time.sleep(0.25)

    releaser = threading.Thread(target=release_day0, daemon=True)
    releaser.start()
    day1 = _ingest(dagbag, 1)  # dag.test() runs tasks in this thread; it returns once released
    releaser.join(timeout=60)

    assert seen and all(s["validate"] == "success" for s in seen)
    assert [s["build_features"] for s in seen] == [None] * len(seen)  # held while day 0 ran
    assert day1.state == "success", _states(day1)
    lake = Lake(settings.lake_root)
    manifest = json.loads((lake.snapshot(lake.partitions("raw")[1]) / MANIFEST).read_text())
    assert [p["interval"] for p in manifest["partitions"]] == [
        iv.id for iv in lake.partitions("raw")
    ]
