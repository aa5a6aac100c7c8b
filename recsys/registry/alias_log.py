"""The alias log: every move of ``champion`` (or any alias), who made it, when, from what, and why.

MLflow keeps only where an alias points *now*; this log, two tables in the event store's database
(``Settings.event_store_url``), keeps every move, so "which model was live at time T" is one query
and ``rollback`` is one step.

* ``alias_heads``: one row per alias, the version it holds and, while an operator blocks
  promotions, the reason. Moves are a compare-and-set on this row: ``UPDATE ... WHERE version IS
  NOT DISTINCT FROM :expected`` must change exactly one row, in the same transaction as the history
  row, so of two movers that saw the same version exactly one wins and the other gets
  ``AliasConflict``. PostgreSQL re-checks the condition after waiting for the winner's row lock;
  SQLite writes start with ``BEGIN IMMEDIATE``, which serialises writers across processes.
* ``alias_moves``: the append-only history.

Moves are made through ``recsys.registry.aliases``, which keeps MLflow in step with this log.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

logger = logging.getLogger(__name__)

# Kinds of moves (they change the version) and of holds (they block or unblock promotions).
PROMOTE, FORCE, ROLLBACK, EXTERNAL = "promote", "force", "rollback", "external"
END = "end"  # an alias removed on purpose (an A/B test's candidate, once decided)
BLOCK, UNBLOCK = "block", "unblock"
MOVE_KINDS = (PROMOTE, FORCE, ROLLBACK, EXTERNAL, END)
HOLD_KINDS = (BLOCK, UNBLOCK)

SQLITE_TIMEOUT_S = 30  # how long a SQLite writer waits for another one's lock
_WRITE = "recsys_write"  # execution option: begin SQLite transactions with the write lock

metadata = sa.MetaData()
moves_table = sa.Table(
    "alias_moves",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("alias", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("from_version", sa.String(32), nullable=True),  # None: the alias was not set
    sa.Column(
        "to_version", sa.String(32), nullable=True
    ),  # None: removed (external) ; holds: =from
    sa.Column("moved_at", sa.DateTime(timezone=True), nullable=False),  # UTC
    sa.Column("actor", sa.String(256), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("pending", sa.Boolean, nullable=False, default=False),  # recorded, not yet in MLflow
    sa.Index("ix_alias_moves_alias_time", "alias", "moved_at"),
)
heads_table = sa.Table(
    "alias_heads",
    metadata,
    sa.Column("alias", sa.String(64), primary_key=True),
    sa.Column("version", sa.String(32), nullable=True),
    sa.Column("blocked", sa.Text, nullable=True),  # the operator's reason while blocked
)


class AliasError(RuntimeError):
    """A move that was refused; nothing was changed."""


class AliasConflict(AliasError):
    def __init__(self, alias: str, expected: str | None, actual: str | None) -> None:
        self.alias, self.expected, self.actual = alias, expected, actual
        super().__init__(
            f"conflict: {alias} moved from {label(expected)} to {label(actual)} meanwhile"
        )


class AliasBlocked(AliasError):
    def __init__(self, alias: str, reason: str) -> None:
        self.alias, self.reason = alias, reason
        super().__init__(f"promotions to {alias} are blocked: {reason}")


class NothingToRollBack(AliasError):
    pass


@dataclass(frozen=True)
class Move:
    """One row of ``alias_moves``."""

    id: int
    alias: str
    kind: str
    from_version: str | None
    to_version: str | None
    moved_at: dt.datetime
    actor: str
    reason: str
    pending: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "moved_at": self.moved_at.isoformat()}

    def describe(self) -> str:
        what = (
            f"{label(self.from_version)} -> {label(self.to_version)}"
            if self.kind in MOVE_KINDS
            else f"at {label(self.to_version)}"
        )
        note = "  (pending: not yet in MLflow)" if self.pending else ""
        return (
            f"#{self.id} {self.moved_at.isoformat(timespec='seconds')} {self.alias} "
            f"{self.kind:<8} {what}  by {self.actor}: {self.reason}{note}"
        )


def label(version: str | None) -> str:
    return f"v{version}" if version is not None else "(none)"


def to_utc(ts: dt.datetime) -> dt.datetime:
    """Aware UTC; a naive time is taken to be UTC already (SQLite stores them naive)."""
    return ts.replace(tzinfo=dt.UTC) if ts.tzinfo is None else ts.astimezone(dt.UTC)


def parse_time(text: str) -> dt.datetime:
    """ISO-8601 text to aware UTC (naive = UTC); ValueError with an example when unparseable."""
    try:
        return to_utc(dt.datetime.fromisoformat(text.strip()))
    except ValueError:
        raise ValueError(
            f"bad time {text!r}: use ISO-8601 such as 2026-11-01T12:00 (UTC unless it has an "
            "offset, e.g. 2026-11-01T13:00+01:00)"
        ) from None


def actor(env: Mapping[str, str] | None = None) -> str:
    """Who is acting: ``airflow:<dag>/<run>`` inside an Airflow task, else ``cli:<user>@<host>``."""
    env = os.environ if env is None else env
    if env.get("AIRFLOW_CTX_DAG_ID"):
        return f"airflow:{env['AIRFLOW_CTX_DAG_ID']}/{env.get('AIRFLOW_CTX_DAG_RUN_ID', '')}"
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        user = str(os.getuid())
    return f"cli:{user}@{socket.gethostname()}"


def _engine(url: str) -> sa.Engine:
    if not url.startswith("sqlite"):
        return sa.create_engine(url)
    has_timeout = "timeout" in sa.make_url(url).query
    engine = sa.create_engine(
        url, connect_args={} if has_timeout else {"timeout": SQLITE_TIMEOUT_S}
    )

    # pysqlite begins transactions late (at the first write) and in DEFERRED mode; let SQLAlchemy
    # emit BEGIN, IMMEDIATE for writes, so a writer holds the lock from its first read.
    @sa.event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        write = conn.get_execution_options().get(_WRITE)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


class AliasLog:
    """The durable, compare-and-set history of alias moves behind any SQLAlchemy URL."""

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.url = url
        self.engine = _engine(url)
        try:
            with self._write() as conn:
                metadata.create_all(conn)
        except sa.exc.DBAPIError:  # another process created the tables at the same moment
            with self._write() as conn:
                metadata.create_all(conn)

    def _write(self) -> Any:
        return self.engine.execution_options(**{_WRITE: True}).begin()

    # -- writes -------------------------------------------------------------------------------
    def move(
        self,
        alias: str,
        to_version: str | None,
        expected_from: str | None,
        actor: str,
        reason: str,
        kind: str = PROMOTE,
        *,
        at: dt.datetime | None = None,
        pending: bool = False,
    ) -> Move:
        """Move ``alias`` to ``to_version`` if it holds ``expected_from`` (None: never set).

        Raises ``AliasConflict`` when it holds another version, ``AliasBlocked`` for a ``promote``
        while promotions are blocked (``force``, ``rollback`` and ``external`` moves pass).
        """
        if kind not in MOVE_KINDS:
            raise ValueError(f"kind must be one of {', '.join(MOVE_KINDS)}, not {kind!r}")
        if (to_version is None) != (kind == END) and kind != EXTERNAL:
            raise ValueError("an end move removes an alias, and only it (or an external move)")
        if to_version == expected_from:
            raise ValueError(f"{alias} already holds {label(to_version)}: nothing to move")
        _check_reason(reason)
        h = heads_table.c
        cas = [h.alias == alias, h.version.is_not_distinct_from(expected_from)]
        if kind == PROMOTE:
            cas.append(h.blocked.is_(None))
        with self._write() as conn:
            conn.execute(self._ensure_head(alias))
            done = conn.execute(heads_table.update().where(*cas).values(version=to_version))
            if done.rowcount != 1:
                actual, blocked = conn.execute(
                    sa.select(h.version, h.blocked).where(h.alias == alias)
                ).one()
                if actual != expected_from:
                    raise AliasConflict(alias, expected_from, actual)
                raise AliasBlocked(alias, blocked)
            return self._record(
                conn, alias, kind, expected_from, to_version, actor, reason, at, pending
            )

    def confirm(self, move_id: int, at: dt.datetime | None = None) -> Move:
        """Mark a pending move as applied in MLflow, at ``at`` (now): when it took effect."""
        c = moves_table.c
        with self._write() as conn:
            conn.execute(
                moves_table.update()
                .where(c.id == move_id, c.pending.is_(True))
                .values(pending=False, moved_at=to_utc(at or dt.datetime.now(dt.UTC)))
            )
            return _move(conn.execute(sa.select(moves_table).where(c.id == move_id)).one())

    def block(self, alias: str, actor: str, reason: str) -> Move:
        """Refuse ``promote`` moves of ``alias`` until ``unblock``; recorded with the reason."""
        return self._hold(alias, actor, reason, BLOCK)

    def unblock(self, alias: str, actor: str, reason: str) -> Move:
        return self._hold(alias, actor, reason, UNBLOCK)

    def _hold(self, alias: str, actor: str, reason: str, kind: str) -> Move:
        _check_reason(reason)
        h = heads_table.c
        with self._write() as conn:
            conn.execute(self._ensure_head(alias))
            version, blocked = conn.execute(
                sa.select(h.version, h.blocked).where(h.alias == alias)
            ).one()
            if kind == UNBLOCK and blocked is None:
                raise ValueError(f"promotions to {alias} are not blocked")
            conn.execute(
                heads_table.update()
                .where(h.alias == alias)
                .values(blocked=reason if kind == BLOCK else None)
            )
            return self._record(conn, alias, kind, version, version, actor, reason, None, False)

    def _ensure_head(self, alias: str) -> sa.Executable:
        if self.engine.dialect.name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        elif self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            return heads_table.insert().prefix_with("IGNORE").values(alias=alias)  # MySQL
        return insert(heads_table).values(alias=alias).on_conflict_do_nothing()

    @staticmethod
    def _record(
        conn: sa.Connection,
        alias: str,
        kind: str,
        from_version: str | None,
        to_version: str | None,
        actor: str,
        reason: str,
        at: dt.datetime | None,
        pending: bool,
    ) -> Move:
        row = {
            "alias": alias,
            "kind": kind,
            "from_version": from_version,
            "to_version": to_version,
            # Taken once the write lock is held, so times follow the order of the moves.
            "moved_at": to_utc(at or dt.datetime.now(dt.UTC)),
            "actor": actor,
            "reason": reason,
            "pending": pending,
        }
        (move_id,) = conn.execute(moves_table.insert().values(**row)).inserted_primary_key
        return Move(id=move_id, **row)

    # -- reads --------------------------------------------------------------------------------
    def current(self, alias: str) -> str | None:
        """The version the log says ``alias`` holds (a pending move included)."""
        h = heads_table.c
        with self.engine.connect() as conn:
            return conn.execute(sa.select(h.version).where(h.alias == alias)).scalar()

    def blocked(self, alias: str) -> str | None:
        """The reason promotions to ``alias`` are blocked, or None."""
        h = heads_table.c
        with self.engine.connect() as conn:
            return conn.execute(sa.select(h.blocked).where(h.alias == alias)).scalar()

    def history(self, alias: str | None = None) -> list[Move]:
        """Recorded moves and holds, oldest first (in the order they were recorded)."""
        query = sa.select(moves_table).order_by(moves_table.c.id)
        if alias is not None:
            query = query.where(moves_table.c.alias == alias)
        with self.engine.connect() as conn:
            return [_move(row) for row in conn.execute(query)]

    def head(self, alias: str) -> Move | None:
        """The latest move (not hold) of ``alias``, pending or not."""
        moves = [m for m in self.history(alias) if m.kind in MOVE_KINDS]
        return moves[-1] if moves else None

    def live_at(self, alias: str, when: dt.datetime) -> Move | None:
        """The move in force at ``when`` (naive = UTC): the latest applied one at or before it.

        None before the first move. A move whose ``to_version`` is None removed the alias.
        """
        c = moves_table.c
        query = (
            sa.select(moves_table)
            .where(c.alias == alias, c.kind.in_(MOVE_KINDS), c.pending.is_(False))
            .where(c.moved_at <= to_utc(when))
            .order_by(c.moved_at.desc(), c.id.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _move(row)

    def chain(self, alias: str) -> list[str | None]:
        """The versions a rollback walks back through, oldest first; the last is the current one.

        Promotions, forced and external moves push their version, a rollback pops one: a second
        rollback goes one promotion further back instead of flip-flopping between two versions.
        A pending move that a later move superseded never took effect and is skipped.
        """
        moves = [m for m in self.history(alias) if m.kind in MOVE_KINDS]
        stack: list[str | None] = []
        for i, m in enumerate(moves):
            if m.pending and i < len(moves) - 1:
                continue
            if m.kind == ROLLBACK and stack:
                stack.pop()
            if not stack or stack[-1] != m.to_version:
                stack.append(m.to_version)
        return stack

    def previous(self, alias: str) -> str | None:
        """The version a rollback of ``alias`` would move to, or None when there is none."""
        chain = self.chain(alias)
        return chain[-2] if len(chain) > 1 else None


def _move(row: Any) -> Move:
    m = row._mapping
    fields = {f.name: m[f.name] for f in dataclasses.fields(Move)}
    return Move(**{**fields, "moved_at": to_utc(m["moved_at"]), "pending": bool(m["pending"])})


def _check_reason(reason: str) -> None:
    if not reason or not reason.strip():
        raise ValueError("a reason is required: it is recorded with the move")
