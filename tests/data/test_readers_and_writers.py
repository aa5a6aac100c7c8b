"""Readers isolated from writers: a partition being re-published is read whole, old or new, never
skipped; snapshots are checked against their hash when loaded; what is written is fsynced."""

import os
import stat
import threading

import pytest

from recsys.data import events, features, ingest
from recsys.data.lake import (
    EVENTS,
    MANIFEST,
    CorruptPartitionError,
    IncompletePartitionError,
    Interval,
    Lake,
    write_json,
    write_parquet,
)
from recsys.data.locks import partition_lock

DAYS = [Interval.parse("2024-01-01", "2024-01-02"), Interval.parse("2024-01-02", "2024-01-03")]


@pytest.fixture
def two_days(backend_settings):
    records = [
        {"user_id": f"u{k % 5}", "item_id": f"i{k % 7}", "event_time": f"2024-01-0{d}T{k:02d}:00"}
        for d in (1, 2)
        for k in range(20)
    ]
    events.EventStore(backend_settings.event_store_url).append(events.prepare_rows(records))
    for day in DAYS:
        assert ingest.run(backend_settings, day)["validation"]["success"]
    return backend_settings


def test_a_partition_being_republished_is_waited_for_not_skipped(two_days):
    settings = two_days
    lake = Lake(settings.lake_root)
    directory = lake.partition("raw", DAYS[1])
    frame, manifest = lake.read_events("raw", DAYS[1]), lake.manifest("raw", DAYS[1])
    removed, go_on = threading.Event(), threading.Event()

    def republish() -> None:  # what ``publish`` does, held open in the middle
        with partition_lock(directory):
            (directory / MANIFEST).unlink()
            removed.set()
            go_on.wait(30)
            write_parquet(frame, directory / EVENTS)
            write_json(manifest, directory / MANIFEST)

    writer = threading.Thread(target=republish)
    writer.start()
    assert removed.wait(10)
    built: dict = {}
    reader = threading.Thread(target=lambda: built.update(features.run(settings, DAYS[1])))
    reader.start()
    reader.join(1.0)
    assert reader.is_alive()  # it waits for the writer instead of building without the day
    go_on.set()
    writer.join(30)
    reader.join(60)
    assert [p["interval"] for p in built["partitions"]] == [d.id for d in DAYS]
    assert built["n_events"] == 40


def test_a_partition_left_half_published_fails_the_build_loudly(two_days):
    lake = Lake(two_days.lake_root)
    (lake.partition("raw", DAYS[1]) / MANIFEST).unlink()  # a publisher killed mid-way
    with pytest.raises(IncompletePartitionError, match=DAYS[1].id):
        features.run(two_days, DAYS[1])


def test_a_snapshot_that_no_longer_matches_its_hash_is_refused(two_days):
    lake = Lake(two_days.lake_root)
    path = lake.snapshot(DAYS[1]) / features.INTERACTIONS
    features.load(two_days)  # intact: loads
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    with pytest.raises(CorruptPartitionError, match="snapshot"):
        features.load(two_days)


def test_writes_are_fsynced_file_and_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def record(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real(fd)

    monkeypatch.setattr(os, "fsync", record)
    write_json({"a": 1}, tmp_path / "x" / "manifest.json")
    assert synced == [False, True]  # the file's bytes, then its folder's entry
    synced.clear()
    import pandas as pd

    write_parquet(pd.DataFrame({"a": [1]}), tmp_path / "x" / "events.parquet")
    assert synced == [False, True]
