"""Operating the quarantine: list it, release a partition after a fix in the event store, on a
local lake and on one in S3 (moto's server)."""

import pandas as pd
import pytest
import sqlalchemy as sa

from recsys.config import ENV_LAKE, Settings, lake_path
from recsys.data import collect, events, features, ingest, quarantine, validate
from recsys.data.lake import Interval, Lake, read_json, read_parquet

DAY = Interval.parse("2024-01-01", "2024-01-02")
NEXT = Interval.parse("2024-01-02", "2024-01-03")
GOOD = [
    {"user_id": f"u{i % 3}", "item_id": f"i{i}", "event_time": f"2024-01-01T0{i}:00:00"}
    for i in range(6)
]
NEXT_DAY = [{"user_id": "u1", "item_id": "i9", "event_time": "2024-01-02T05:00:00"}]
BAD = {"event_id": "bad-1", "user_id": None, "item_id": "i1", "event_time": "2024-01-01T07:00:00"}


@pytest.fixture(params=["local", "s3"])
def settings(request, backend_settings, monkeypatch):
    """A local lake or one in S3, with the event store on SQLite or PostgreSQL."""
    if request.param == "local":
        return backend_settings
    monkeypatch.setenv(ENV_LAKE, request.getfixturevalue("s3_lake"))
    return Settings.from_env()


@pytest.fixture
def quarantined(settings):
    store = events.EventStore(settings.event_store_url)
    store.append(events.prepare_rows([*GOOD, BAD, *NEXT_DAY]))
    for interval in (DAY, NEXT):
        collect.run(settings, interval)
        if validate.run(settings, interval)["success"]:
            features.run(settings, interval)
    return store


def test_list_says_what_was_stopped_and_where(settings, quarantined):
    (entry,) = quarantine.list_quarantined(settings)
    assert entry["interval"] == DAY.id and entry["rows"] == len(GOOD) + 1
    assert "expect_column_values_to_not_be_null(user_id)" in entry["summary"]
    assert read_parquet(lake_path(entry["path"]))["event_id"].tolist().count("bad-1") == 1
    page = lake_path(entry["data_docs"])  # the rendered Great Expectations report, with the rows
    assert page.is_file() and page.suffix == ".html" and "user_id" in page.read_text()


def test_release_without_a_fix_keeps_it_quarantined(settings, quarantined):
    result = ingest.release(settings, DAY.id)
    assert not result["released"]
    assert [e["interval"] for e in quarantine.list_quarantined(settings)] == [DAY.id]


def test_release_after_a_fix_publishes_it_and_rebuilds_features(settings, quarantined):
    with quarantined.engine.begin() as conn:  # the operator repairs the row at the source
        conn.execute(
            sa.update(events.events_table)
            .where(events.events_table.c.event_id == "bad-1")
            .values(user_id="u9")
        )
    result = ingest.release(settings, DAY.id)
    assert result["released"] and result["features_rebuilt"] == [DAY.id, NEXT.id]
    lake = Lake(settings.lake_root)
    assert quarantine.list_quarantined(settings) == []
    assert lake.partitions("raw") == [DAY, NEXT]
    kept = list((lake.root / "quarantine" / "released").iterdir())
    assert len(kept) == 1 and kept[0].name.startswith(DAY.id)  # the old copy is kept
    latest = read_json(lake.latest_path)
    assert [p["interval"] for p in latest["partitions"]] == [DAY.id, NEXT.id]


@pytest.mark.parametrize(
    "bad_id,message",
    [
        ("yesterday", "not a partition id"),
        ("20240102T000000Z--20240103T000000Z", "is not quarantined"),
    ],
)
def test_release_refuses_what_is_not_quarantined(settings, quarantined, bad_id, message):
    with pytest.raises(ValueError, match=message):
        ingest.release(settings, bad_id)


def _corrupt_partition(settings):
    from recsys.data.lake import EVENTS, CorruptPartitionError, publish

    lake = Lake(settings.lake_root)
    publish(pd.DataFrame({"a": range(50)}), lake.partition("raw", DAY), {"validation": {}})
    path = lake.partition("raw", DAY) / EVENTS
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    with pytest.raises(CorruptPartitionError) as err:
        lake.read_events("raw", DAY)
    return lake, err.value


def test_a_corrupt_partition_is_moved_to_the_quarantine_with_its_reason(settings):
    lake, err = _corrupt_partition(settings)
    target = quarantine.quarantine_corrupt(lake, err, "test")
    assert target == lake.partition("quarantine", DAY)
    assert lake.partitions("raw") == [] and lake.partitions("quarantine") == [DAY]
    reason = read_json(target / quarantine.CORRUPTION)
    assert (reason["manifest_sha256"], reason["actual_sha256"]) == (err.expected, err.actual)
    manifest = lake.manifest("quarantine", DAY)
    assert (
        manifest["validation"]["success"] is False
        and err.actual in manifest["validation"]["summary"]
    )


def test_a_partition_republished_while_read_is_not_quarantined(settings):
    from recsys.data.lake import publish

    lake, err = _corrupt_partition(settings)
    publish(pd.DataFrame({"a": range(50)}), lake.partition("raw", DAY), {})  # a concurrent rerun
    assert quarantine.quarantine_corrupt(lake, err, "test") is None
    assert lake.partitions("raw") == [DAY] and lake.partitions("quarantine") == []
