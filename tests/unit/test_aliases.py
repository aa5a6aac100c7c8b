"""The alias log: compare-and-set moves, history, live-at, rollback chains, MLflow in step."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import threading
from types import SimpleNamespace

import pytest

from recsys.registry import aliases
from recsys.registry.alias_log import (
    AliasBlocked,
    AliasConflict,
    AliasLog,
    NothingToRollBack,
    actor,
    parse_time,
)

T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
ME = "cli:tester@host"


class FakeRegistry:
    """What ``aliases`` needs of ``Registry``: versions holding aliases; ``set_alias`` can fail."""

    def __init__(self, n_versions: int = 5) -> None:
        self.held: dict[str, str] = {}  # alias -> version
        self.known = {str(v) for v in range(1, n_versions + 1)}
        self.fail_next_set = False
        self.down = False  # alias reads raise, as Registry.alias does on MLflow errors
        self.meanwhile: list = []  # callables, one run after each alias read

    def version(self, version: str) -> SimpleNamespace:
        if version not in self.known:
            raise LookupError(f"no model version {version}")
        return SimpleNamespace(version=version)

    def alias(self, alias: str) -> SimpleNamespace | None:
        if self.down:
            raise ConnectionError("MLflow is down")
        found = SimpleNamespace(version=self.held[alias]) if alias in self.held else None
        if self.meanwhile:  # another process acts after MLflow answered, before the caller goes on
            self.meanwhile.pop(0)()
        return found

    def set_alias(self, alias: str, version: str) -> None:
        if self.fail_next_set:
            self.fail_next_set = False
            raise ConnectionError("MLflow is down")
        self.held[alias] = version


@pytest.fixture
def url(store_url) -> str:
    """The alias log's database: SQLite, then PostgreSQL."""
    return store_url


@pytest.fixture
def alias_log(url) -> AliasLog:
    return AliasLog(url)


def _moves(alias_log: AliasLog) -> list[tuple]:
    return [(m.kind, m.from_version, m.to_version) for m in alias_log.history()]


def test_compare_and_set(alias_log):
    first = alias_log.move("champion", "1", None, ME, "first model")
    assert (first.from_version, first.to_version, first.pending) == (None, "1", False)
    with pytest.raises(AliasConflict, match=r"champion moved from \(none\) to v1 meanwhile"):
        alias_log.move("champion", "2", None, ME, "thought it was unset")
    with pytest.raises(AliasConflict) as err:
        alias_log.move("champion", "2", "3", ME, "stale view")
    assert (err.value.expected, err.value.actual) == ("3", "1")
    alias_log.move("champion", "2", "1", ME, "better")
    assert alias_log.current("champion") == "2"
    assert alias_log.current("challenger") is None
    assert _moves(alias_log) == [("promote", None, "1"), ("promote", "1", "2")]  # refused: none


@pytest.mark.parametrize(
    "to,expected,kind,reason,match",
    [
        ("2", None, "promote", "  ", "reason is required"),
        ("2", None, "teleport", "why", "kind must be"),
        ("1", "1", "promote", "why", "already holds"),
        (None, "1", "force", "why", "an end move removes an alias"),
        ("2", "1", "end", "why", "an end move removes an alias"),
    ],
)
def test_invalid_moves_are_refused(alias_log, to, expected, kind, reason, match):
    alias_log.move("champion", "1", None, ME, "first")
    with pytest.raises(ValueError, match=match):
        alias_log.move("champion", to, expected, ME, reason, kind)
    assert alias_log.current("champion") == "1" and len(alias_log.history()) == 1


def test_history_is_recorded_in_order_with_who_and_why(alias_log):
    alias_log.move("champion", "1", None, "airflow:dag/run1", "no champion yet")
    alias_log.move("challenger", "2", None, ME, "trained")
    alias_log.move("champion", "2", "1", "airflow:dag/run2", "beats the champion", "promote")
    everything = alias_log.history()
    assert [(m.alias, m.to_version) for m in everything] == [
        ("champion", "1"),
        ("challenger", "2"),
        ("champion", "2"),
    ]
    assert [m.id for m in everything] == sorted(m.id for m in everything)
    champion = alias_log.history("champion")
    assert [m.actor for m in champion] == ["airflow:dag/run1", "airflow:dag/run2"]
    assert champion[1].reason == "beats the champion" and champion[1].from_version == "1"
    assert all(m.moved_at.tzinfo is not None for m in everything)
    assert champion[1].as_dict()["moved_at"].endswith("+00:00")


def test_live_at_boundaries(alias_log):
    t1, t2 = T0, T0 + dt.timedelta(hours=2)
    m1 = alias_log.move("champion", "1", None, ME, "first", at=t1)
    m2 = alias_log.move("champion", "2", "1", ME, "second", at=t2)
    alias_log.move("challenger", "3", None, ME, "other alias", at=T0 + dt.timedelta(hours=1))
    tiny = dt.timedelta(microseconds=1)
    assert alias_log.live_at("champion", t1 - tiny) is None  # before the first move
    assert alias_log.live_at("champion", t1) == m1  # exactly at a move: that move is in force
    assert alias_log.live_at("champion", t2 - tiny) == m1  # between two moves
    assert alias_log.live_at("champion", t2) == m2
    assert alias_log.live_at("champion", t2 + dt.timedelta(days=30)) == m2
    naive = t2.replace(tzinfo=None)  # naive times are UTC
    offset = t2.astimezone(dt.timezone(dt.timedelta(hours=1))) - tiny  # 14:59:59.999999+01:00
    assert alias_log.live_at("champion", naive) == m2
    assert alias_log.live_at("champion", offset) == m1
    assert alias_log.live_at("nobody", t2) is None


def test_live_at_ignores_a_pending_move_until_confirmed(alias_log):
    m1 = alias_log.move("champion", "1", None, ME, "first", at=T0)
    at = T0 + dt.timedelta(minutes=1)
    pending = alias_log.move("champion", "2", "1", ME, "second", at=at, pending=True)
    later = T0 + dt.timedelta(hours=1)
    assert pending.pending and alias_log.live_at("champion", later) == m1
    confirmed = alias_log.confirm(pending.id, at=later)
    assert not confirmed.pending and confirmed.moved_at == later  # live from when it was applied
    assert alias_log.live_at("champion", later) == confirmed
    assert alias_log.live_at("champion", later - dt.timedelta(seconds=1)) == m1


def test_rollback_walks_back_the_chain_of_promotions(alias_log):
    reg = FakeRegistry()
    for v in ("1", "2", "3"):
        aliases.move_alias(reg, alias_log, "champion", v, ME, f"promote {v}")
    assert alias_log.chain("champion") == ["1", "2", "3"] and alias_log.previous("champion") == "2"

    back = aliases.rollback(reg, alias_log, ME, "v3 is broken")
    assert (back.kind, back.from_version, back.to_version) == ("rollback", "3", "2")
    assert reg.held["champion"] == "2"
    # A second rollback goes one more promotion back, not forth to 3.
    again = aliases.rollback(reg, alias_log, ME, "v2 is broken too")
    assert (again.from_version, again.to_version) == ("2", "1") and reg.held["champion"] == "1"
    with pytest.raises(NothingToRollBack, match="nothing to roll back to"):
        aliases.rollback(reg, alias_log, ME, "and v1?")
    assert reg.held["champion"] == "1" and len(alias_log.history()) == 5

    aliases.move_alias(reg, alias_log, "champion", "4", ME, "fixed model")
    undo = aliases.rollback(reg, alias_log, ME, "v4 is broken")
    assert undo.to_version == "1" and reg.held["champion"] == "1"


def test_nothing_to_roll_back_on_an_empty_log(alias_log):
    with pytest.raises(NothingToRollBack):
        aliases.rollback(FakeRegistry(), alias_log, ME, "panic")
    assert alias_log.history() == []


def test_block_refuses_promotions_but_not_force_or_rollback(alias_log):
    reg = FakeRegistry()
    aliases.move_alias(reg, alias_log, "champion", "1", ME, "first")
    aliases.move_alias(reg, alias_log, "champion", "2", ME, "second")
    hold = alias_log.block("champion", ME, "holiday freeze")
    assert (hold.kind, hold.from_version, hold.to_version) == ("block", "2", "2")
    assert alias_log.blocked("champion") == "holiday freeze"
    with pytest.raises(AliasBlocked, match="holiday freeze"):
        aliases.move_alias(reg, alias_log, "champion", "3", ME, "beats the champion")
    assert reg.held["champion"] == "2" and alias_log.current("champion") == "2"
    aliases.move_alias(reg, alias_log, "champion", "3", ME, "hotfix", "force")
    assert aliases.rollback(reg, alias_log, ME, "hotfix broke it").to_version == "2"
    alias_log.unblock("champion", ME, "freeze over")
    with pytest.raises(ValueError, match="not blocked"):
        alias_log.unblock("champion", ME, "twice")
    aliases.move_alias(reg, alias_log, "champion", "4", ME, "beats the champion")
    assert reg.held["champion"] == "4"
    assert [m.kind for m in alias_log.history()] == [
        "promote",
        "promote",
        "block",
        "force",
        "rollback",
        "unblock",
        "promote",
    ]
    assert alias_log.chain("champion") == ["1", "2", "4"]  # holds are not moves


def test_retry_after_mlflow_failed_finishes_the_recorded_move(alias_log):
    reg = FakeRegistry()
    aliases.move_alias(reg, alias_log, "champion", "1", ME, "first")
    reg.fail_next_set = True
    with pytest.raises(ConnectionError):
        aliases.move_alias(reg, alias_log, "champion", "2", ME, "better", expected_from="1")
    (pending,) = [m for m in alias_log.history() if m.pending]
    assert alias_log.current("champion") == "2" and reg.held["champion"] == "1"
    assert alias_log.live_at("champion", dt.datetime.now(dt.UTC)).to_version == "1"

    # The promotion task is retried with what it read from MLflow: champion 1.
    again = aliases.move_alias(reg, alias_log, "champion", "2", ME, "better", expected_from="1")
    assert again.id == pending.id and not again.pending
    assert reg.held["champion"] == "2"
    assert _moves(alias_log) == [("promote", None, "1"), ("promote", "1", "2")]  # no "external"
    assert alias_log.live_at("champion", dt.datetime.now(dt.UTC)).to_version == "2"


def test_reconcile_finishes_an_interrupted_move(alias_log):
    reg = FakeRegistry()
    aliases.move_alias(reg, alias_log, "champion", "1", ME, "first")
    reg.fail_next_set = True
    with pytest.raises(ConnectionError):
        aliases.move_alias(reg, alias_log, "champion", "2", ME, "better")
    finished = aliases.reconcile(reg, alias_log, "champion")
    assert finished.to_version == "2" and not finished.pending and reg.held["champion"] == "2"
    assert aliases.reconcile(reg, alias_log, "champion") is None


def test_reconcile_records_moves_made_outside_the_log(alias_log):
    reg = FakeRegistry()
    reg.held["champion"] = "1"  # set before the log existed
    found = aliases.reconcile(reg, alias_log, "champion", by="cli:ops@host")
    assert (found.kind, found.from_version, found.to_version) == ("external", None, "1")
    assert found.actor == "cli:ops@host" and "outside recsys" in found.reason
    assert aliases.reconcile(reg, alias_log, "champion") is None  # in step: nothing recorded

    # A promoter read champion 1; meanwhile someone sets 2 in the MLflow UI.
    reg.held["champion"] = "2"
    with pytest.raises(AliasConflict, match="moved from v1 to v2 meanwhile"):
        aliases.move_alias(reg, alias_log, "champion", "3", ME, "better", expected_from="1")
    assert reg.held["champion"] == "2"
    assert _moves(alias_log) == [("external", None, "1"), ("external", "1", "2")]

    del reg.held["champion"]  # removed by hand: nothing is live from now on
    removed = aliases.reconcile(reg, alias_log, "champion")
    assert removed.to_version is None and alias_log.current("champion") is None
    assert aliases.rollback(reg, alias_log, ME, "restore").to_version == "2"
    assert reg.held["champion"] == "2"


def test_reconcile_records_nothing_while_mlflow_cannot_answer(alias_log):
    reg = FakeRegistry()
    aliases.move_alias(reg, alias_log, "champion", "1", ME, "first")
    reg.down = True
    with pytest.raises(ConnectionError):
        aliases.reconcile(reg, alias_log, "champion")
    with pytest.raises(ConnectionError):
        aliases.move_alias(reg, alias_log, "champion", "2", ME, "better")
    assert len(alias_log.history()) == 1 and alias_log.current("champion") == "1"


def test_reconcile_does_not_mistake_a_move_made_while_it_read(alias_log):
    reg = FakeRegistry()
    aliases.move_alias(reg, alias_log, "champion", "1", ME, "first")
    # MLflow answers "1"; before the log is read, another promoter starts moving the champion
    # to 2: it waits for the mover lock, so it cannot fall between the two reads.
    other = threading.Thread(
        target=aliases.move_alias,
        args=(reg, alias_log, "champion", "2", "cli:other@host", "better"),
    )
    reg.meanwhile.append(other.start)
    assert aliases.reconcile(reg, alias_log, "champion") is None  # in step: nothing to record
    other.join(10)
    assert _moves(alias_log) == [("promote", None, "1"), ("promote", "1", "2")]
    assert reg.held["champion"] == "2" and not reg.meanwhile

    # The same, caught between the other promoter's log write and its MLflow write.
    def half_moved() -> None:
        alias_log.move("champion", "3", "2", "cli:other@host", "best", pending=True)

    reg.meanwhile.append(half_moved)
    finished = aliases.reconcile(reg, alias_log, "champion")
    assert (finished.to_version, finished.pending) == ("3", False) and reg.held["champion"] == "3"
    assert _moves(alias_log) == [
        ("promote", None, "1"),
        ("promote", "1", "2"),
        ("promote", "2", "3"),
    ]


def test_reconcile_gives_up_on_an_alias_that_keeps_moving(alias_log):
    reg = FakeRegistry()
    held = [None, "1", "2", "3", "4", "5"]

    def another_move() -> None:  # as move_alias does: the log, then MLflow, then confirmed
        before, after = held.pop(0), held[0]
        moved = alias_log.move("champion", after, before, ME, "busy", pending=True)
        reg.held["champion"] = after
        alias_log.confirm(moved.id)

    reg.meanwhile.extend([another_move] * 5)
    with pytest.raises(RuntimeError, match="kept moving"):
        aliases.reconcile(reg, alias_log, "champion")
    assert [m.kind for m in alias_log.history()] == ["promote"] * 5  # it recorded nothing


def test_unknown_version_records_nothing(alias_log):
    with pytest.raises(LookupError):
        aliases.move_alias(FakeRegistry(n_versions=2), alias_log, "champion", "7", ME, "typo")
    assert alias_log.history() == [] and alias_log.current("champion") is None


def test_actor():
    env = {"AIRFLOW_CTX_DAG_ID": "recsys_full_retrain", "AIRFLOW_CTX_DAG_RUN_ID": "manual__2026"}
    assert actor(env) == "airflow:recsys_full_retrain/manual__2026"
    who = actor({})
    assert who.startswith("cli:") and "@" in who


@pytest.mark.parametrize(
    "text,expected",
    [
        ("2026-11-01T12:00", T0),
        ("2026-11-01 12:00:00Z", T0),
        ("2026-11-01T13:30+01:30", T0),
    ],
)
def test_parse_time(text, expected):
    assert parse_time(text) == expected


def test_parse_time_says_what_it_wants():
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_time("yesterday")


# -- races: real processes against one database -------------------------------------------------
def _mover(url: str, expected: str | None, version: str, barrier, results) -> None:
    alias_log = AliasLog(url)
    barrier.wait()
    try:
        alias_log.move("champion", version, expected, f"worker-{version}", "race")
        results.put((version, "won"))
    except AliasConflict:
        results.put((version, "conflict"))
    except Exception as err:  # reported to the test, which fails on it
        results.put((version, f"{type(err).__name__}: {err}"))
    finally:
        alias_log.engine.dispose()


def _race(url: str, expected: str | None, n: int = 6) -> None:
    alias_log = AliasLog(url)
    if expected is not None:
        alias_log.move("champion", expected, None, ME, "before the race")
    alias_log.engine.dispose()  # no connection crosses the fork
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    versions = [str(100 + i) for i in range(n)]
    procs = [
        ctx.Process(target=_mover, args=(url, expected, v, barrier, results)) for v in versions
    ]
    for p in procs:
        p.start()
    outcome = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    winners = [v for v, what in outcome.items() if what == "won"]
    assert len(winners) == 1, outcome
    assert all(what == "conflict" for v, what in outcome.items() if v not in winners), outcome
    assert alias_log.current("champion") == winners[0]
    racing = [m for m in alias_log.history("champion") if m.reason == "race"]
    assert [(m.from_version, m.to_version) for m in racing] == [(expected, winners[0])]
    alias_log.engine.dispose()


@pytest.mark.parametrize("expected", [None, "1"], ids=["first-move", "next-move"])
def test_concurrent_movers_on_sqlite_exactly_one_wins(url, expected):
    _race(url, expected)


@pytest.mark.postgres
@pytest.mark.parametrize("expected", [None, "1"], ids=["first-move", "next-move"])
def test_concurrent_movers_on_postgres_exactly_one_wins(postgres_url, expected):
    _race(postgres_url, expected)


@pytest.mark.postgres
def test_log_on_postgres(postgres_url):
    alias_log = AliasLog(postgres_url)
    AliasLog(postgres_url).engine.dispose()  # tables exist already: creating is idempotent
    reg = FakeRegistry()
    m1 = aliases.move_alias(reg, alias_log, "champion", "1", ME, "first")
    aliases.move_alias(reg, alias_log, "champion", "2", ME, "second")
    assert alias_log.live_at("champion", m1.moved_at) == m1
    assert alias_log.live_at("champion", m1.moved_at - dt.timedelta(microseconds=1)) is None
    assert aliases.rollback(reg, alias_log, ME, "bad").to_version == "1"
    with pytest.raises(NothingToRollBack):
        aliases.rollback(reg, alias_log, ME, "again")
    alias_log.block("champion", ME, "freeze")
    with pytest.raises(AliasBlocked):
        alias_log.move("champion", "3", "1", ME, "beats it")
    assert [m.kind for m in alias_log.history()] == ["promote", "promote", "rollback", "block"]
    alias_log.engine.dispose()
