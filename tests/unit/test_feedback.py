"""Serving's view of recent behaviour: the recent-events cache, the merge with the store, and
the trending list (cold start and the pool of new items)."""

import datetime as dt

import pytest

from recsys.config import ServingConfig
from recsys.data import events
from recsys.model.recommender import POPULAR
from recsys.serving.feedback import Popularity, RecentEvents, merge_history


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_recent_events_expire_and_evict_the_least_recent_user():
    clock = Clock()
    cache = RecentEvents(max_users=2, per_user=2, ttl_s=10, clock=clock)
    cache.add("u1", ("t1", "e1", "a"))
    clock.now = 5
    cache.add("u1", ("t2", "e2", "b"))
    cache.add("u1", ("t3", "e3", "c"))  # per_user=2: e1 goes
    assert [row[1] for row in cache.get("u1")] == ["e2", "e3"]
    clock.now = 14
    assert [row[1] for row in cache.get("u1")] == ["e2", "e3"]
    clock.now = 15.5  # both were added at 5: expired
    assert cache.get("u1") == []
    cache.add("u2", ("t", "x", "i"))
    cache.add("u3", ("t", "y", "i"))
    cache.add("u4", ("t", "z", "i"))
    assert len(cache) == 2 and cache.get("u2") == []


STORED = [("2024-01-01T00:00:00", "e1", "a"), ("2024-01-02T00:00:00", "e2", "b")]


@pytest.mark.parametrize(
    ("recent", "limit", "expected"),
    [
        ([], 10, ["a", "b"]),
        ([("2024-01-02T00:00:00", "e2", "b")], 10, ["a", "b"]),  # already stored: once
        ([("2024-01-03T00:00:00", "e3", "c")], 10, ["a", "b", "c"]),
        ([("2024-01-01T12:00:00", "e3", "c")], 10, ["a", "c", "b"]),  # by event time
        ([("2024-01-03T00:00:00", "e3", "c")], 2, ["b", "c"]),
        ([], 1, ["b"]),
    ],
)
def test_merge_history_dedupes_on_event_id_and_orders_like_the_store(recent, limit, expected):
    assert merge_history(STORED, recent, limit) == expected


def _store(store_url, records):
    store = events.EventStore(store_url)
    store.append(events.prepare_rows(records))
    return store


def test_trending_counts_the_window_before_the_newest_event(store_url):
    old = [{"user_id": f"u{n}", "item_id": "old", "event_time": "2024-01-01"} for n in range(9)]
    recent = [
        {"user_id": "u1", "item_id": "hot", "event_time": "2024-01-10"},
        {"user_id": "u2", "item_id": "hot", "event_time": "2024-01-10T01:00"},
        {"user_id": "u3", "item_id": "warm", "event_time": "2024-01-09"},
    ]
    store = _store(store_url, old + recent)
    assert store.item_counts(dt.timedelta(days=7), 10) == [("hot", 2), ("warm", 1)]
    assert store.item_counts(dt.timedelta(days=30), 1) == [("old", 9)]
    assert store.item_counts(None, 10) == [("old", 9), ("hot", 2), ("warm", 1)]
    pop = Popularity(store, ServingConfig(trending_days=7, cold_start_size=2))
    assert pop.popular(5, exclude=set()) == []  # not computed yet
    assert pop.refresh()
    assert pop.popular(5, exclude={"hot"}) == [("warm", 1.0, POPULAR)]
    assert [item for item, _, _ in pop.popular(1, exclude=set())] == ["hot"]
    topped_up = Popularity(store, ServingConfig(trending_days=7, cold_start_size=3))
    topped_up.refresh()  # a quiet window: all-time favourites follow, counted 0
    assert topped_up.popular(5, set()) == [
        ("hot", 2.0, POPULAR),
        ("warm", 1.0, POPULAR),
        ("old", 0.0, POPULAR),
    ]


def test_an_empty_store_has_no_trending_list(store_url):
    pop = Popularity(_store(store_url, []), ServingConfig())
    assert pop.refresh() and pop.popular(10, set()) == []


def test_refresh_if_stale_and_a_failing_store_keeps_the_last_list(store_url):
    clock = Clock()
    store = _store(store_url, [{"user_id": "u", "item_id": "a", "event_time": "2024-01-01"}])
    pop = Popularity(store, ServingConfig(trending_refresh_s=60), clock=clock)
    assert pop.refresh_if_stale()  # never computed
    clock.now = 30
    assert not pop.refresh_if_stale()
    clock.now = 61
    store.engine.dispose()
    store.item_counts = lambda *a: (_ for _ in ()).throw(OSError("store down"))
    assert not pop.refresh_if_stale()
    assert pop.errors == 1 and pop.current.items == ("a",)


def test_new_items_are_the_trending_items_without_a_model_row(store_url):
    records = [{"user_id": "u", "item_id": i, "event_time": "2024-01-01"} for i in "abc"]
    pop = Popularity(_store(store_url, records), ServingConfig())
    pop.refresh()

    class Model:  # the two attributes new_items reads
        index = {"a": 1, "b": 2}
        n_known = 1  # "b" is indexed but has no embedding row

    items, as_set = pop.new_items("7", Model())
    assert sorted(items) == ["b", "c"] and as_set == {"b", "c"}
    assert pop.new_items("7", Model())[0] is items  # memoised per version
