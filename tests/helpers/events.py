"""Events for the tests: history reads that must agree on every backend, vouched clicks."""

from recsys.data import events


def history_cases() -> list[dict]:
    """Events a history read must sort, filter and cut: ties in time, no item, a foreign type."""
    rows = [
        {"user_id": "u", "item_id": f"i{t % 7}", "event_time": 1000 + t // 2} for t in range(30)
    ]
    rows += [
        {"user_id": "u", "item_id": None, "event_time": 1003},  # no item: not history
        {"user_id": "u", "item_id": "x", "event_time": 1004, "event_type": "bogus"},  # kept raw
        {"user_id": "v", "item_id": "other", "event_time": 1005},
    ]
    return events.prepare_rows(rows)


def assert_history_reads_agree(store: events.EventStore) -> None:
    """``history_rows`` (driver SQL where it can) gives what the SQLAlchemy statement gives."""
    for user, limit in (("u", 200), ("u", 7), ("u", 1), ("v", 5), ("nobody", 3)):
        with store.engine.connect() as conn:
            rows = conn.execute(events._HISTORY, {"user": user, "limit": limit}).all()
        assert store.history_rows(user, limit) == [tuple(r) for r in reversed(rows)]
    assert len(store.history_rows("u", 200)) == 30 and "x" not in store.history("u")


TEST_KEY = "k-test"  # the API key id that vouches for clicks written straight into a store


def vouched(records: list[dict], key_id: str = TEST_KEY) -> list[dict]:
    """``prepare_rows(records)`` as the API stores them: written with an API key, so the online
    guard and A/B readouts count them (``impressions.read_clicks``)."""
    return [{**row, events.KEY_ID: key_id} for row in events.prepare_rows(records)]
