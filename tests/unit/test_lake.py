import datetime as dt

import pytest

from recsys.data.lake import Interval


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

    from recsys.data.lake import write_json

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(json, "dump", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_json({"a": 1}, tmp_path / "x.json")
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_partition_names_itself_and_both_hashes(tmp_path):
    import pickle

    import pandas as pd

    from recsys.data.lake import EVENTS, CorruptPartitionError, Lake, publish

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


@pytest.fixture(params=["local", "s3"])
def lake(request, tmp_path):
    """A lake on a local folder, and one on S3 (moto's server): the same code must hold on both."""
    from recsys.data.lake import Lake

    if request.param == "local":
        return Lake(tmp_path / "lake")
    return Lake(request.getfixturevalue("s3_lake"))


def test_a_partition_round_trips_and_is_listed_once_complete(lake):
    import pandas as pd

    from recsys.data.lake import EVENTS, MANIFEST, publish, unpublish

    day, next_day = (
        Interval.parse("2024-01-01", "2024-01-02"),
        Interval.parse("2024-01-02", "2024-01-03"),
    )
    frame = pd.DataFrame({"a": range(10), "b": list("abcdefghij")})
    manifest = publish(frame, lake.partition("raw", day), {"note": "x"})
    publish(frame.head(3), lake.partition("raw", next_day), {})
    assert (manifest["rows"], manifest["note"]) == (10, "x")
    assert lake.partitions("raw") == [day, next_day]
    pd.testing.assert_frame_equal(lake.read_events("raw", day), frame)
    (lake.partition("raw", next_day) / MANIFEST).unlink()  # a write that never completed
    assert lake.partitions("raw") == [day] and lake.manifest("raw", next_day) is None
    with pytest.raises(FileNotFoundError, match="no complete raw partition"):
        lake.read_events("raw", next_day)
    unpublish(lake.partition("raw", day))
    assert lake.partitions("raw") == [] and not (lake.partition("raw", day) / EVENTS).exists()


def test_a_moved_partition_keeps_every_file_and_leaves_none_behind(lake):
    import pandas as pd

    from recsys.data.lake import move_tree, publish, read_json, write_json

    day = Interval.parse("2024-01-01", "2024-01-02")
    source = lake.partition("quarantine", day)
    publish(pd.DataFrame({"a": [1, 2]}), source, {})
    write_json({"page": 1}, source / "data_docs" / "index.json")
    target = move_tree(source, lake.root / "quarantine" / "released" / "x")
    assert lake.partitions("quarantine") == [] and not (source / "data_docs").exists()
    assert read_json(target / "data_docs" / "index.json") == {"page": 1}
    assert read_json(target / "manifest.json")["rows"] == 2


def test_the_lock_excludes_a_second_holder_until_released(lake):
    import threading
    import time

    order: list[str] = []

    def second() -> None:
        with lake.lock("item_index"):
            order.append("second")

    with lake.lock("item_index"):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.5)  # the second holder is polling (or blocked) meanwhile
        order.append("first")
    thread.join(10)
    assert order == ["first", "second"]


def test_a_stale_lock_object_is_broken_and_a_live_one_times_out(tmp_path):
    import json
    import time

    from recsys.config import lake_path
    from recsys.data.locks import LockTimeout, object_lock

    path = lake_path(f"memory://{tmp_path.name}/.x.lock")
    path.write_bytes(json.dumps({"owner": "killed", "at": time.time() - 3600}).encode())
    with object_lock(path, stale_s=60):
        assert json.loads(path.read_bytes())["owner"] != "killed"
    assert not path.exists()  # released
    path.write_bytes(json.dumps({"owner": "alive", "at": time.time()}).encode())
    with pytest.raises(LockTimeout, match="held by alive"), object_lock(path, wait_s=0.3):
        pass
    assert json.loads(path.read_bytes())["owner"] == "alive"  # not taken from its holder


@pytest.mark.parametrize(
    "root,message",
    [("nosuchfs://bucket/lake", "no filesystem for nosuchfs://"), ("gs://bucket/lake", "gcsfs")],
)
def test_a_lake_url_without_its_filesystem_is_refused_clearly(root, message):
    from recsys.config import Settings

    try:
        import gcsfs  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("gcsfs is installed here")
    with pytest.raises(ValueError, match=message):
        Settings.from_env({"RECSYS_HOME": "/tmp/x", "RECSYS_LAKE_ROOT": root})


def test_local_paths_and_file_urls_stay_local(tmp_path):
    from pathlib import Path

    from recsys.config import lake_path

    assert lake_path(f"file://{tmp_path}") == tmp_path.resolve()
    assert isinstance(lake_path(tmp_path / "x"), Path)
    assert str(lake_path("s3://bucket/lake")) == "s3://bucket/lake"
