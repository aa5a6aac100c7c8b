"""Least privilege on the real PostgreSQL: the roles ``recsys store init --roles`` grants, from the
same ``roles.sql`` the deployment runs, and each role's allowed and refused statements."""

import datetime as dt
import uuid

import pytest
import sqlalchemy as sa

from recsys.cli.store import create_tables
from recsys.data import events, roles
from recsys.data.impressions import Impression, ImpressionLog

pytestmark = pytest.mark.postgres


@pytest.fixture
def granted(postgres_db):
    """The event store's tables made by their owner, the two roles granted, and a stand-in for
    the Airflow database that the roles must not reach."""
    url, other_url = postgres_db(), postgres_db()
    create_tables(url)
    tag = uuid.uuid4().hex[:8]
    names = {"serving": f"recsys_serving_{tag}", "pipeline": f"recsys_pipeline_{tag}"}
    other = sa.make_url(other_url).database
    roles.grant(url, serving=names["serving"], pipeline=names["pipeline"],
                serving_password="s" * 32, pipeline_password="p" * 32, others=[other])  # fmt: skip
    as_role = {who: str(sa.make_url(url).set(username=role)) for who, role in names.items()}
    other_as = {who: str(sa.make_url(other_url).set(username=role)) for who, role in names.items()}
    yield url, as_role, other_as
    owner = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with owner.connect() as conn:
        for role in names.values():
            conn.execute(sa.text(f"DROP OWNED BY {role}"))
    owner.dispose()
    admin = sa.create_engine(str(sa.make_url(url).set(database="postgres")),
                             isolation_level="AUTOCOMMIT")  # fmt: skip
    with admin.connect() as conn:  # the databases: postgres_db drops them
        for role in names.values():
            conn.execute(sa.text(f"DROP ROLE IF EXISTS {role}"))
    admin.dispose()


def _runs(url: str, sql: str) -> bool:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(sql))
        return True
    except sa.exc.DBAPIError as err:
        assert "permission denied" in str(err) or "must be owner" in str(err), err
        return False
    finally:
        engine.dispose()


EVENT = (
    "INSERT INTO events (event_id, user_id, item_id, event_type, event_time, ingested_at) "
    "VALUES ('{id}', 'u', 'i', 'view', '2024-01-01T00:00:00', now())"
)
IMPRESSION = (
    "INSERT INTO impressions (request_id, user_id, model_version, items, cold_start, served_at)"
    " VALUES ('{id}', 'u', '1', '[]', false, now())"
)


def test_serving_reads_and_appends_and_nothing_more(granted):
    _, as_role, other_as = granted
    serving = as_role["serving"]
    allowed = [
        "SELECT count(*) FROM events",
        EVENT.format(id="s1"),
        IMPRESSION.format(id="r1"),
        "SELECT count(*) FROM alias_moves",
        "SELECT count(*) FROM alias_heads",
        "SELECT count(*) FROM api_keys",
    ]
    refused = [
        "UPDATE events SET item_id = 'x'",
        "DELETE FROM events",
        "SELECT items, user_id FROM impressions",  # what others were served
        "INSERT INTO alias_moves (alias, kind, moved_at, actor, reason) "
        "VALUES ('champion', 'promote', now(), 'x', 'x')",
        "UPDATE alias_heads SET version = '9'",
        "INSERT INTO api_keys VALUES ('k', 'n', 'admin', 'h', now(), NULL)",
        "CREATE TABLE sneaky (x int)",
        "DROP TABLE events",
        "ALTER TABLE events ADD COLUMN x int",
        "TRUNCATE events",
    ]
    assert [_runs(serving, sql) for sql in allowed] == [True] * len(allowed)
    assert [_runs(serving, sql) for sql in refused] == [False] * len(refused)
    with pytest.raises(sa.exc.OperationalError, match="permission denied"):
        sa.create_engine(other_as["serving"]).connect()
    # ...and the serving code runs as that role: its store opens, stores, reads, logs impressions.
    store = events.EventStore(serving)
    (row,) = events.prepare_rows([{"user_id": "u", "item_id": "j", "event_time": "2024-01-02"}])
    assert store.append_one(row) is True and store.history("u") == ["i", "j"]
    log = ImpressionLog(store.engine)
    log.write([Impression("r2", "u", "1", ("j",), dt.datetime(2024, 1, 2))])


def test_the_pipeline_reads_and_writes_but_never_changes_the_schema(granted):
    _, as_role, other_as = granted
    pipeline = as_role["pipeline"]
    allowed = [
        EVENT.format(id="p1"),
        "UPDATE events SET item_id = item_id",
        "SELECT count(*) FROM impressions",
        "INSERT INTO alias_moves (alias, kind, to_version, moved_at, actor, reason, pending) "
        "VALUES ('champion', 'promote', '1', now(), 'x', 'x', false)",
    ]
    refused = ["CREATE TABLE sneaky (x int)", "DROP TABLE events", "TRUNCATE events"]
    assert [_runs(pipeline, sql) for sql in allowed] == [True] * len(allowed)
    assert [_runs(pipeline, sql) for sql in refused] == [False] * len(refused)
    with pytest.raises(sa.exc.OperationalError, match="permission denied"):
        sa.create_engine(other_as["pipeline"]).connect()


def test_role_sql_refuses_names_and_secrets_it_would_have_to_escape():
    good = dict(serving="a", serving_password="x" * 16, pipeline="b", pipeline_password="y" * 16)
    assert "GRANT INSERT ON impressions TO a;" in roles.roles_sql("events", **good)
    with pytest.raises(ValueError, match="plain PostgreSQL name"):
        roles.roles_sql("events; DROP", **good)
    with pytest.raises(ValueError, match="passwords"):
        roles.roles_sql("events", **{**good, "serving_password": "it's"})
