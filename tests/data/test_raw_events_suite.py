"""The raw-events Great Expectations suite on fixture partitions, good and bad, and the gate
that moves a partition to raw/ or quarantine/."""

import datetime as dt

import pandas as pd
import pytest

from recsys.data import collect, events, suites, validate
from recsys.data.lake import EVENTS, REPORT, Interval, Lake

DAY = Interval.parse("2024-01-01", "2024-01-02")


@pytest.fixture
def settings(backend_settings):
    """The event store on SQLite, then PostgreSQL (the production backend)."""
    return backend_settings


def _params(interval=DAY):
    return suites.suite_params(interval)


def _partition(records):
    frame = collect.normalise(pd.DataFrame(events.prepare_rows(records)))
    return validate.parse_event_times(frame)


GOOD = [
    {"user_id": f"u{i}", "item_id": f"i{i}", "event_time": f"2024-01-01T0{i}:00:00"}
    for i in range(5)
]


def test_good_partition_passes():
    report = suites.validate_frame(_partition(GOOD), suites.load_suite("raw_events"), _params())
    assert report.success, report.failures
    assert report.statistics["evaluated_expectations"] >= 10


@pytest.mark.parametrize(
    "bad,expectation,column",
    [
        ({"user_id": None}, "expect_column_values_to_not_be_null", "user_id"),
        ({"item_id": None}, "expect_column_values_to_not_be_null", "item_id"),
        (
            {"event_time": "not a time", "ingested_at": "2024-01-01T05:00:00"},
            "expect_column_values_to_not_be_null",
            "event_ts",
        ),
        ({"event_type": "teleport"}, "expect_column_values_to_be_in_set", "event_type"),
        (
            {"event_time": "2024-01-03T00:00:00", "ingested_at": "2024-01-01T05:00:00"},
            "expect_column_values_to_be_between",
            "event_ts",
        ),
        ({"user_id": "x" * 200}, "expect_column_value_lengths_to_be_between", "user_id"),
        ({"item_id": "item 7"}, "expect_column_values_to_match_regex", "item_id"),
        ({"user_id": "u\t1"}, "expect_column_values_to_match_regex", "user_id"),
        (
            {"ingested_at": "2024-01-02T03:00:00"},
            "expect_column_values_to_be_between",
            "ingested_at",
        ),
    ],
)
def test_bad_rows_fail_the_suite(bad, expectation, column):
    rows = GOOD + [{**GOOD[0], "event_id": "bad-1", **bad}]
    report = suites.validate_frame(_partition(rows), suites.load_suite("raw_events"), _params())
    assert not report.success
    assert any(f["expectation"] == expectation and f["column"] == column for f in report.failures)


@pytest.mark.parametrize(
    "column,value",
    [("value", "five stars"), ("user_id", 7), ("ingested_at", "2024-01-01"), ("event_ts", 1.5)],
)
def test_wrong_types_fail_the_suite(column, value):
    frame = _partition(GOOD)
    frame[column] = frame[column].astype(object)
    frame.loc[2, column] = value
    report = suites.validate_frame(frame, suites.load_suite("raw_events"), _params())
    assert ("expect_column_values_to_be_of_type", column) in {
        (f["expectation"], f["column"]) for f in report.failures
    }


def test_an_unexpected_column_fails_the_schema_check():
    frame = _partition(GOOD).assign(password="hunter2")
    report = suites.validate_frame(frame, suites.load_suite("raw_events"), _params())
    assert "expect_table_columns_to_match_set" in {f["expectation"] for f in report.failures}
    assert "expect_table_columns_to_match_set(): observed" in report.summary()  # not "None rows"


def test_duplicate_event_ids_fail_the_suite():
    frame = _partition(GOOD)
    frame = pd.concat([frame, frame.iloc[:1]], ignore_index=True)
    report = suites.validate_frame(frame, suites.load_suite("raw_events"), _params())
    assert any(f["expectation"] == "expect_column_values_to_be_unique" for f in report.failures)


def _store(settings, records):
    store = events.EventStore(settings.event_store_url)
    store.append(events.prepare_rows(records))
    return store


def test_failing_partition_is_quarantined_with_rows_and_report(settings):
    bad = [
        {"user_id": None, "item_id": "i", "event_time": "2024-01-01T03:00:00", "event_id": "n"},
        {
            "user_id": "u",
            "item_id": "i",
            "event_time": "garbage",
            "event_id": "g",
            "ingested_at": "2024-01-01T04:00:00",
        },
    ]
    store = _store(settings, GOOD + bad)
    collect.run(settings, DAY)
    result = validate.run(settings, DAY)
    lake = Lake(settings.lake_root)
    assert not result["success"]
    kept = pd.read_parquet(lake.partition("quarantine", DAY) / EVENTS)
    assert len(kept) == len(GOOD) + 2 and {"n", "g"} <= set(kept["event_id"])
    assert (lake.partition("quarantine", DAY) / REPORT).exists()
    assert not (lake.partition("raw", DAY) / EVENTS).exists()
    assert store.count() == len(GOOD) + 2  # nothing lost from the event store


def test_rerunning_an_interval_rewrites_an_identical_partition(settings):
    _store(settings, GOOD)
    lake = Lake(settings.lake_root)
    contents = []
    for _ in range(2):
        collect.run(settings, DAY)
        assert validate.run(settings, DAY)["success"]
        contents.append((lake.partition("raw", DAY) / EVENTS).read_bytes())
    assert contents[0] == contents[1]
    assert lake.partitions("raw") == [DAY]
    assert len(pd.read_parquet(lake.partition("raw", DAY) / EVENTS)) == len(GOOD)


def test_validate_without_collect_says_what_to_do(settings):
    with pytest.raises(FileNotFoundError, match="collect first"):
        validate.run(settings, Interval(dt.datetime(2020, 1, 1), dt.datetime(2020, 1, 2)))


def test_a_drift_breach_quarantines_a_partition_that_gx_passes(settings):
    days = [Interval.parse(f"2024-01-0{d}", f"2024-01-0{d + 1}") for d in range(1, 6)]
    normal = [
        {"user_id": f"u{i}", "item_id": f"i{i % 4}", "event_time": f"2024-01-0{d}T0{i}:00:00"}
        for d in range(1, 5)
        for i in range(8)
    ]
    feed_broke = [
        {
            "user_id": "u1",
            "item_id": f"sku-{i}",
            "event_type": "purchase",
            "event_time": f"2024-01-05T0{i}:00:00",
        }
        for i in range(8)
    ]
    _store(settings, normal + feed_broke)
    outcomes = []
    for day in days:
        collect.run(settings, day)
        outcomes.append(validate.run(settings, day))
    assert [o["success"] for o in outcomes] == [True, True, True, True, False]
    assert "new_item_share=1.000" in outcomes[-1]["summary"]
    assert "event_type_shift=1.000" in outcomes[-1]["summary"]
    manifest = Lake(settings.lake_root).manifest("quarantine", days[-1])
    assert {f["check"] for f in manifest["validation"]["drift"] if f["quarantines"]} == {
        "new_item_share",
        "event_type_shift",
    }
