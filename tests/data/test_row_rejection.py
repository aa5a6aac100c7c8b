"""The gate rejects bad rows one by one, accepts a fast client clock, and an operator repairs a
quarantined interval with commands only. The event store runs on SQLite and PostgreSQL."""

import pytest

from recsys import cli
from recsys.config import GatePolicy
from recsys.data import collect, events, features, ingest, quarantine, validate
from recsys.data.lake import Interval, Lake, read_parquet

DAY = Interval.parse("2024-01-01", "2024-01-02")


def _good(n: int, day: str = "2024-01-01", item: str = "i") -> list[dict]:
    return [
        {"event_id": f"{day}-{item}{k}", "user_id": f"u{k % 20}", "item_id": f"{item}{k % 30}",
         "event_time": f"{day}T{k % 24:02d}:{k % 60:02d}:00"}
        for k in range(200)
    ]  # fmt: skip


def _bad(n: int) -> list[dict]:
    """Rows with a space in the user id, as a writer past the API and importer could store."""
    return [
        {"user_id": f"u {k}", "item_id": "i1", "event_time": "2024-01-01T05:00"} for k in range(n)
    ]


def _store(settings, records):
    events.EventStore(settings.event_store_url).append(events.prepare_rows(records))


def test_a_few_bad_rows_are_rejected_and_the_rest_of_the_day_published(backend_settings):
    settings = backend_settings
    # Written to the store by another writer, past the edges that would refuse them.
    bad = [
        {"event_id": "sp", "user_id": "u 1", "item_id": "i1", "event_time": "2024-01-01T05:00"},
        {"event_id": "nul", "user_id": "u2", "item_id": "i\x7f", "event_time": "2024-01-01T06:00"},
    ]
    _store(settings, _good(200) + bad)
    result = ingest.run(settings, DAY)
    checked = result["validation"]
    assert checked["success"] and "stopped" not in result
    assert checked["rejected_rows"] == 2 and "2 of 202 rows rejected" in checked["summary"]
    lake = Lake(settings.lake_root)
    assert lake.manifest("raw", DAY)["rows"] == 200
    rejects = read_parquet(lake.partition("raw", DAY) / validate.REJECTS)
    assert sorted(rejects["event_id"]) == ["nul", "sp"]
    reasons = dict(zip(rejects["event_id"], rejects[validate.REASON], strict=True))
    assert reasons["sp"] == "expect_column_values_to_match_regex(user_id)"
    assert reasons["nul"] == "expect_column_values_to_match_regex(item_id)"
    assert result["features"]["n_events"] == 200


def test_more_bad_rows_than_the_policy_allows_quarantine_the_partition(backend_settings):
    settings = backend_settings
    bad = [
        {"user_id": f"u {k}", "item_id": "i1", "event_time": "2024-01-01T05:00"} for k in range(3)
    ]
    _store(settings, _good(200) + bad)
    collect.run(settings, DAY)
    checked = validate.run(settings, DAY, gate=GatePolicy(max_bad_row_share=0.01))
    assert not checked["success"] and "3 of 203 rows bad (1.48%)" in checked["summary"]
    assert [e["interval"] for e in quarantine.list_quarantined(settings)] == [DAY.id]


def test_an_event_a_little_after_the_interval_from_a_fast_clock_is_kept(backend_settings):
    """A client clock 30 s fast just before midnight: the event arrives on day 1 (``ingested_at``)
    stamped on day 2. The contract allows that skew, and so does the gate."""
    settings = backend_settings
    fast = {
        "event_id": "fast", "user_id": "u1", "item_id": "i1",
        "event_time": "2024-01-02T00:00:20", "ingested_at": "2024-01-01T23:59:50",
    }  # fmt: skip
    _store(settings, [*_good(200), fast])
    result = ingest.run(settings, DAY)
    assert result["validation"]["success"] and result["validation"]["rejected_rows"] == 0
    assert result["features"]["n_events"] == 201


def test_release_excluding_bad_rows_recovers_a_quarantined_day(backend_settings, capsys):
    settings = backend_settings
    bad = [
        {"user_id": f"u {k}", "item_id": "i1", "event_time": "2024-01-01T05:00"} for k in range(9)
    ]
    _store(settings, _good(200) + bad)
    assert "stopped" in ingest.run(settings, DAY)  # 9 of 209 bad: more than 1%
    cli.main(["quarantine", "release", DAY.id, "--exclude-bad-rows"])
    out = capsys.readouterr().out
    assert f"released {DAY.id}" in out and "9 rows rejected, with their reasons" in out
    lake = Lake(settings.lake_root)
    assert lake.partitions("raw") == [DAY] and quarantine.list_quarantined(settings) == []
    assert len(read_parquet(lake.partition("raw", DAY) / validate.REJECTS)) == 9
    assert features.load(settings).manifest["n_events"] == 200


def test_release_accepting_drift_publishes_a_day_drift_stopped(backend_settings, capsys):
    settings = backend_settings
    days = [Interval.parse(f"2024-01-0{d}", f"2024-01-0{d + 1}") for d in range(1, 5)]
    _store(settings, [e for d in range(1, 4) for e in _good(200, f"2024-01-0{d}")])
    _store(settings, _good(200, "2024-01-04", item="new"))  # every item new: a broken feed?
    for interval in days:
        result = ingest.run(settings, interval)
    assert "stopped" in result and "new_item_share" in result["validation"]["summary"]
    with pytest.raises(SystemExit):  # without a reason the same drift stops it again
        cli.main(["quarantine", "release", days[-1].id])
    cli.main(["quarantine", "release", days[-1].id, "--accept-drift", "catalogue relaunch"])
    assert f"released {days[-1].id}" in capsys.readouterr().out
    manifest = Lake(settings.lake_root).manifest("raw", days[-1])
    assert manifest["validation"]["accepted_drift"] == "catalogue relaunch"
    assert "drift accepted by operator: catalogue relaunch" in manifest["validation"]["summary"]


def test_the_gate_limits_are_checked():
    with pytest.raises(ValueError, match="max_bad_row_share"):
        GatePolicy(max_bad_row_share=1.5)
