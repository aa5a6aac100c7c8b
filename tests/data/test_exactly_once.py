"""Exactly-once collection: reruns, crashes between writing and marking done, late events,
duplicate ids, backfills over collected ranges, corrupt partitions."""

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from recsys import schema as S
from recsys.data import collect, events, features, synthetic, validate
from recsys.data.lake import (
    EVENTS,
    MANIFEST,
    CorruptPartitionError,
    IncompletePartitionError,
    Interval,
    Lake,
)

START = dt.datetime(2024, 1, 1)


@pytest.fixture
def settings(backend_settings):
    """The event store on SQLite, then PostgreSQL (the production backend)."""
    return backend_settings


def _day(d: int) -> Interval:
    return Interval(START + dt.timedelta(days=d), START + dt.timedelta(days=d + 1))


def _ingest(settings, d: int) -> dict:
    collect.run(settings, _day(d))
    assert validate.run(settings, _day(d))["success"]
    return features.run(settings, _day(d))


@pytest.fixture
def store(settings):
    store = events.EventStore(settings.event_store_url)
    store.append(events.prepare_rows(synthetic.generate(n_users=40, n_items=30, days=3)))
    return store


def _all_rows(settings) -> pd.DataFrame:
    lake = Lake(settings.lake_root)
    return pd.concat([lake.read_events("raw", iv) for iv in lake.partitions("raw")])


def test_every_event_lands_exactly_once_across_reruns(settings, store):
    for d in (0, 1, 2, 1, 0, 2):  # reruns, out of order
        _ingest(settings, d)
    rows = _all_rows(settings)
    assert len(rows) == store.count() and rows[S.EVENT_ID].is_unique


def test_crash_before_the_manifest_leaves_nothing_visible_and_a_rerun_repairs_it(
    settings, store, monkeypatch
):
    import recsys.data.lake as lake_module

    real = lake_module.write_json

    def crash(obj, path):
        if path.name == MANIFEST and "raw" in path.parts:
            raise OSError("simulated crash after the data file, before the manifest")
        return real(obj, path)

    collect.run(settings, _day(0))
    monkeypatch.setattr(lake_module, "write_json", crash)
    with pytest.raises(OSError, match="simulated crash"):
        validate.run(settings, _day(0))
    monkeypatch.setattr(lake_module, "write_json", real)
    lake = Lake(settings.lake_root)
    assert (lake.partition("raw", _day(0)) / EVENTS).exists()  # the data file was written...
    assert lake.partitions("raw") == []  # ...but without its manifest nobody trains on it:
    with pytest.raises(IncompletePartitionError, match="half-published"):
        features.run(settings, _day(0))  # a build stops loudly, rather than skip the day
    assert validate.run(settings, _day(0))["success"]  # the retry (staging is still there)
    assert lake.partitions("raw") == [_day(0)]
    assert len(lake.read_events("raw", _day(0))) == collect.run(settings, _day(0))["rows"]


def test_a_retried_validate_task_returns_the_recorded_outcome(settings, store):
    collect.run(settings, _day(0))
    first = validate.run(settings, _day(0))
    again = validate.run(settings, _day(0))  # staging is gone: nothing to redo
    assert again == first


def test_a_late_event_lands_in_the_interval_it_arrived_in(settings, store):
    late = {
        "event_id": "late-1",
        "user_id": "u1",
        "item_id": "i1",
        "event_time": "2024-01-01T08:00:00",
        "ingested_at": "2024-01-03T09:00:00",
    }
    store.append(events.prepare_rows([late]))
    _ingest(settings, 0)
    _ingest(settings, 2)
    lake = Lake(settings.lake_root)
    assert "late-1" not in set(lake.read_events("raw", _day(0))[S.EVENT_ID])
    assert "late-1" in set(lake.read_events("raw", _day(2))[S.EVENT_ID])


def test_duplicate_event_ids_are_dropped_and_counted():
    frame = pd.DataFrame({S.EVENT_ID: ["a", "b", "a", "c", "b"], "n": range(5)})
    kept, dropped = collect.drop_duplicate_ids(frame)
    assert kept[S.EVENT_ID].tolist() == ["a", "b", "c"] and kept["n"].tolist() == [0, 1, 3]
    assert dropped == 2


def test_backfill_over_a_collected_range_reproduces_byte_identical_features(settings, store):
    lake = Lake(settings.lake_root)
    first = [_ingest(settings, d) for d in range(3)]
    before = {d: (lake.snapshot(_day(d)) / features.INTERACTIONS).read_bytes() for d in range(3)}
    again = [_ingest(settings, d) for d in range(3)]
    after = {d: (lake.snapshot(_day(d)) / features.INTERACTIONS).read_bytes() for d in range(3)}
    assert before == after
    assert [m["version"] for m in first] == [m["version"] for m in again]
    assert len({m["version"] for m in first}) == 3  # a different snapshot per day


def test_a_corrupt_partition_is_detected_by_its_hash(settings, store):
    _ingest(settings, 0)
    lake = Lake(settings.lake_root)
    path = lake.partition("raw", _day(0)) / EVENTS
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptPartitionError, match="does not match its manifest"):
        features.run(settings, _day(0))


def test_snapshots_record_the_partitions_and_hashes_they_were_built_from(settings, store):
    manifest = [_ingest(settings, d) for d in range(2)][-1]
    lake = Lake(settings.lake_root)
    assert [p["interval"] for p in manifest["partitions"]] == [_day(0).id, _day(1).id]
    for part in manifest["partitions"]:
        recorded = lake.manifest("raw", Interval.from_id(part["interval"]))
        assert part["sha256"] == recorded["sha256"] and part["rows"] == recorded["rows"]
        assert part["validation"]["success"] is True
        docs = Path(part["validation"]["data_docs"])
        assert docs.is_file() and Path(lake.root) in docs.parents
