import datetime as dt

import pytest

from recsys.lake import Interval


def test_interval_id_round_trips_and_sorts_by_time():
    a = Interval.parse("2024-01-01", "2024-01-02")
    b = Interval.parse("2024-01-02T00:00:00+00:00", "2024-01-03T00:00:00Z")
    assert Interval.from_id(a.id) == a
    assert a.id == "20240101T000000Z--20240102T000000Z"
    assert sorted([b.id, a.id]) == [a.id, b.id]


def test_interval_converts_aware_times_to_utc():
    iv = Interval.parse("2024-01-01T02:00:00+02:00", "2024-01-02T00:00:00+00:00")
    assert iv.start == dt.datetime(2024, 1, 1, 0, 0)


@pytest.mark.parametrize("start,end", [("2024-01-02", "2024-01-01"), ("2024-01-01", "2024-01-01")])
def test_interval_rejects_empty_or_reversed(start, end):
    with pytest.raises(ValueError, match="must be after"):
        Interval.parse(start, end)


def test_interval_rejects_garbage():
    with pytest.raises(ValueError, match="not an ISO-8601"):
        Interval.parse("yesterday", "2024-01-01")


def test_a_failed_json_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    import json

    from recsys.lake import write_json

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(json, "dump", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_json({"a": 1}, tmp_path / "x.json")
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_partition_names_itself_and_both_hashes(tmp_path):
    import pickle

    import pandas as pd

    from recsys.lake import EVENTS, CorruptPartitionError, Lake, publish

    lake, day = Lake(tmp_path), Interval.parse("2024-01-01", "2024-01-02")
    manifest = publish(pd.DataFrame({"a": range(50)}), lake.partition("raw", day), {})
    path = lake.partition("raw", day) / EVENTS
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    with pytest.raises(CorruptPartitionError) as err:
        lake.read_events("raw", day)
    assert (err.value.zone, err.value.interval, err.value.expected) == (
        "raw",
        day,
        manifest["sha256"],
    )
    assert day.id in str(err.value) and manifest["sha256"] in str(err.value)
    assert err.value.actual in str(err.value) and err.value.actual != err.value.expected
    assert str(pickle.loads(pickle.dumps(err.value))) == str(err.value)
