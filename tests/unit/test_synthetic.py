"""The synthetic generator: unchanged defaults, determinism, ground truth visible in the data."""

import datetime as dt
import hashlib
import json
from collections import Counter

import pytest

from recsys import schema as S
from recsys.data import synthetic


def _sha256(records):
    return hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()


def _day(record, start=dt.datetime(2024, 1, 1)):
    return (dt.datetime.fromisoformat(record[S.EVENT_TIME]) - start).days


# Computed with the generator as it was before drift, bursts and bad rows were added.
FIRST_50_SEED_0 = "54e8a7feb98540d38b44c2e8b3cdd58884f61034a1f8a1d60375fefebb386e13"


@pytest.mark.parametrize(
    ("args", "kwargs", "n", "digest"),
    [
        ((), {}, 4182, "53cc89de75315849277fcc692a0b9e076ddb7246e3d30af4595f029c5440575b"),
        (
            (),
            {"n_users": 60, "n_items": 40, "days": 3},
            1237,
            "a0106a126f1b4ab4b378620636630ad3fa468bc07fc0907b55d0f6f178a0c5df",
        ),
        (
            (30, 25, (3, 9), dt.datetime(2023, 5, 6, 7, 8), 4, 0.5, 0.3, 11),
            {},
            174,
            "102ebfc594c0c0786784cd8a8c82863b8d49bbee20ee8d14ac93bbfade0f0ef8",
        ),
    ],
)
def test_defaults_reproduce_the_original_generator(args, kwargs, n, digest):
    records = synthetic.generate(*args, **kwargs)
    assert len(records) == n
    assert _sha256(records) == digest


def test_first_records_of_seed_0_are_unchanged():
    records = synthetic.generate(seed=0)
    assert _sha256(records[:50]) == FIRST_50_SEED_0
    assert records[0] == {
        S.EVENT_ID: "syn-0-89-0",
        S.USER_ID: "u89",
        S.ITEM_ID: "i67",
        S.EVENT_TYPE: "view",
        S.EVENT_TIME: "2024-01-01T00:00:12.069000",
        S.INGESTED_AT: "2024-01-01T00:00:12.069000",
        S.VALUE: None,
    }


def test_same_seed_same_stream_and_truth():
    options = {"n_users": 50, "drift": 0.1, "bursts": 2, "bad_row_rate": 0.1}
    a = synthetic.generate_with_truth(seed=3, **options)
    b = synthetic.generate_with_truth(seed=3, **options)
    other = synthetic.generate_with_truth(seed=4, **options)
    assert a == b
    assert a.records == synthetic.generate(
        n_users=50, seed=3, drift=0.1, bursts=2, bad_row_rate=0.1
    )
    assert other.records != a.records and other.bad_event_ids != a.bad_event_ids


def test_defaults_have_no_defects():
    truth = synthetic.generate_with_truth()
    assert truth.records == synthetic.generate()
    assert truth.drift_event_ids == frozenset() and truth.burst_items == {}
    assert all(ids == () for ids in truth.bad_event_ids.values())
    assert len({r[S.EVENT_ID] for r in truth.records}) == len(truth.records)


def test_options_leave_users_and_times_alone():
    plain = {r[S.EVENT_ID]: r for r in synthetic.generate()}
    changed = synthetic.generate(drift=0.2, bursts=3)
    assert len(changed) == len(plain)
    assert {(r[S.EVENT_ID], r[S.USER_ID], r[S.EVENT_TIME]) for r in changed} == {
        (r[S.EVENT_ID], r[S.USER_ID], r[S.EVENT_TIME]) for r in plain.values()
    }
    assert sum(r[S.ITEM_ID] != plain[r[S.EVENT_ID]][S.ITEM_ID] for r in changed) > 100


def test_bad_rows_of_every_kind_at_the_requested_rate():
    rate = 0.1
    truth = synthetic.generate_with_truth(bad_row_rate=rate)
    records = truth.records
    n_bad = sum(len(ids) for ids in truth.bad_event_ids.values())
    assert abs(n_bad / len(records) - rate) < 0.001
    for kind in synthetic.BAD_KINDS:
        assert abs(len(truth.bad_event_ids[kind]) - n_bad / len(synthetic.BAD_KINDS)) <= 1

    by_id = {r[S.EVENT_ID]: r for r in records if r[S.EVENT_ID].startswith("bad-")}
    for kind in set(synthetic.BAD_KINDS) - {synthetic.DUPLICATE_ID}:
        ids = truth.bad_event_ids[kind]
        assert ids and all(i.startswith(f"bad-{kind}-") and i in by_id for i in ids)
    assert len(by_id) == n_bad - len(truth.bad_event_ids[synthetic.DUPLICATE_ID])
    assert all(by_id[i][S.USER_ID] is None for i in truth.bad_event_ids[synthetic.NULL_USER])
    assert all(by_id[i][S.ITEM_ID] is None for i in truth.bad_event_ids[synthetic.NULL_ITEM])
    for i in truth.bad_event_ids[synthetic.BAD_TIME]:
        with pytest.raises(ValueError):
            dt.datetime.fromisoformat(by_id[i][S.EVENT_TIME])
    unknown = [by_id[i][S.EVENT_TYPE] for i in truth.bad_event_ids[synthetic.UNKNOWN_TYPE]]
    assert unknown and not set(unknown) & set(S.EVENT_TYPES)

    counts = Counter(r[S.EVENT_ID] for r in records)
    assert {i for i, c in counts.items() if c > 1} == set(
        truth.bad_event_ids[synthetic.DUPLICATE_ID]
    )
    assert max(counts.values()) == 2


def test_bad_rows_are_extra_rows_and_duplicates_come_later():
    truth = synthetic.generate_with_truth(n_users=40, bad_row_rate=0.2)
    good, seen = [], set()
    for r in truth.records:  # sorted by ingested_at: the first occurrence of an id is the good one
        if r[S.EVENT_ID].startswith("bad-") or r[S.EVENT_ID] in seen:
            continue
        seen.add(r[S.EVENT_ID])
        good.append(r)
    assert good == synthetic.generate(n_users=40)
    first = {}
    for r in truth.records:
        if r[S.EVENT_ID] in first:
            assert r[S.INGESTED_AT] > first[r[S.EVENT_ID]][S.INGESTED_AT]
            assert r[S.EVENT_TIME] == first[r[S.EVENT_ID]][S.EVENT_TIME]
        first.setdefault(r[S.EVENT_ID], r)


def _steps(truth, n_items):
    """(step on the ring, drifted?) for every event after a user's first, in the user's order."""
    by_user = {}
    for r in truth.records:
        by_user.setdefault(r[S.USER_ID], []).append(r)
    steps = []
    for events in by_user.values():
        events.sort(key=lambda r: int(r[S.EVENT_ID].rsplit("-", 1)[1]))
        for prev, cur in zip(events, events[1:], strict=False):
            step = (int(cur[S.ITEM_ID][1:]) - int(prev[S.ITEM_ID][1:])) % n_items
            steps.append((step, cur[S.EVENT_ID] in truth.drift_event_ids))
    return steps


@pytest.mark.parametrize("drift", [0.0, 0.1])
def test_drift_jumps_far_at_the_recorded_events(drift):
    n_items = 200
    truth = synthetic.generate_with_truth(
        n_users=100, n_items=n_items, new_items_share=0.0, noise=0.0, drift=drift
    )
    steps = _steps(truth, n_items)
    assert all(step in (1, 2, 3) for step, drifted in steps if not drifted)
    assert all(n_items // 4 <= step <= 3 * n_items // 4 + 3 for step, drifted in steps if drifted)
    share = sum(drifted for _, drifted in steps) / len(steps)
    assert abs(share - drift) < 0.02


@pytest.mark.parametrize("bursts", [2, [1, 4]])
def test_burst_items_dominate_their_day(bursts):
    truth = synthetic.generate_with_truth(bursts=bursts, burst_size=3, burst_share=0.5)
    assert len(truth.burst_items) == 2
    if isinstance(bursts, list):
        assert sorted(truth.burst_items) == bursts
    per_day = {}
    for r in truth.records:
        per_day.setdefault(_day(r), Counter())[r[S.ITEM_ID]] += 1
    all_burst_items = {i for items in truth.burst_items.values() for i in items}
    for day, counts in per_day.items():
        total = sum(counts.values())
        if day in truth.burst_items:
            top = {item for item, _ in counts.most_common(3)}
            assert top == set(truth.burst_items[day])
            assert sum(counts[i] for i in top) / total > 0.4
        else:
            assert sum(counts[i] for i in all_burst_items) / total < 0.15


def test_new_items_arrive_daily():
    truth = synthetic.generate_with_truth(n_items=100, new_items_share=0.3, days=4)
    assert truth.catalogue == (70, 80, 90, 100)
    newest_by_day = {}
    for r in truth.records:
        day = min(_day(r), 3)
        item = int(r[S.ITEM_ID][1:])
        assert item < truth.catalogue[day]
        newest_by_day[day] = max(newest_by_day.get(day, 0), item)
    assert newest_by_day[0] < 70 and newest_by_day[3] >= 90


@pytest.mark.parametrize(
    "options",
    [
        {"drift": 1.5},
        {"bad_row_rate": 0.6},
        {"bursts": [9]},
        {"bursts": 7},
        {"burst_size": 0},
        {"burst_share": 0.0},
    ],
)
def test_invalid_options_are_rejected(options):
    with pytest.raises(ValueError):
        synthetic.generate(**options)
