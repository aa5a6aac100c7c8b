"""Moving an alias: the alias log first, then MLflow, so every move is recorded and compare-and-set.

``move_alias`` writes the log first (the move is *pending*), then MLflow, then confirms the move;
``moved_at`` is when MLflow took it. If the process dies in between, the next ``move_alias``,
``rollback`` or ``reconcile`` finishes the pending move (re-applies the MLflow alias), so retrying a
promotion is safe and records nothing twice. An alias that MLflow holds elsewhere than the log says
(set by hand in the MLflow UI, or before this log existed) is recorded as an ``external`` move when
first noticed: MLflow is what serving loads, so it is the truth the log catches up with.

Every mover holds the alias's mover lock (``mover_lock``) while it writes the log *and* MLflow, so
no move falls between another one and its MLflow write. A write that still lands late (MLflow's
client gave up on a request the server applied afterwards) puts back a version the alias held
before; found within ``LATE_WRITE_WINDOW`` of the log's last confirmed move, it is undone (MLflow
restored to the log's head), not recorded as a move. To move an alias by hand, use ``recsys
rollback`` or ``recsys promote --force``: in the MLflow UI, a move to a version that was live in
that window is taken for such a late write.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from types import EllipsisType
from typing import TYPE_CHECKING

import sqlalchemy as sa

from recsys.config import CHAMPION
from recsys.registry.alias_log import (
    END,
    EXTERNAL,
    PROMOTE,
    ROLLBACK,
    AliasLog,
    Move,
    NothingToRollBack,
    actor,
    label,
)

if TYPE_CHECKING:
    from recsys.registry.client import Registry

logger = logging.getLogger(__name__)

LATE_WRITE_WINDOW = dt.timedelta(minutes=15)  # beyond MLflow's client timeouts and retries
_IN_PROCESS: dict[tuple[str, str], threading.Lock] = {}  # movers of in-memory logs


@contextlib.contextmanager
def mover_lock(log: AliasLog, alias: str) -> Iterator[None]:
    """Exclusive to one mover of ``alias`` across processes: a PostgreSQL advisory lock, or a
    file lock beside a SQLite file (not a database lock: events keep flowing meanwhile)."""
    engine = log.engine
    if engine.dialect.name == "postgresql":
        digest = hashlib.blake2b(f"recsys.alias:{alias}".encode(), digest_size=8).digest()
        key = int.from_bytes(digest, "big", signed=True)
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
        return
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        with _IN_PROCESS.setdefault((log.url, alias), threading.Lock()):
            yield
        return
    with open(Path(f"{database}.{alias}.mover.lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def mlflow_version(reg: Registry, alias: str) -> str | None:
    """The version holding ``alias`` in MLflow, or None when no version holds it."""
    found = reg.alias(alias)
    return None if found is None else str(found.version)


def _read_both(
    reg: Registry, log: AliasLog, alias: str, tries: int = 5
) -> tuple[Move | None, str | None]:
    """The log's latest move of ``alias`` and the version MLflow says holds it, read as one.

    recsys records a move (pending), then sets MLflow, then confirms the move. Reading the log,
    then MLflow, then the log again, and finding the same move in the same state both times, means
    no recsys move fell between the reads: a difference is real, not a move caught half-read.
    """
    head = log.head(alias)
    for _ in range(tries):
        in_mlflow = mlflow_version(reg, alias)
        again = log.head(alias)
        if _state(again) == _state(head):
            return again, in_mlflow
        head = again
    raise RuntimeError(f"{alias} kept moving while it was read; try again")


def _state(move: Move | None) -> tuple[int, bool] | None:
    return None if move is None else (move.id, move.pending)


def reconcile(reg: Registry, log: AliasLog, alias: str, by: str | None = None) -> Move | None:
    """Bring the log and MLflow in step (under the mover lock); see ``_reconcile``."""
    with mover_lock(log, alias):
        return _reconcile(reg, log, alias, by)


def _late_write(log: AliasLog, head: Move | None, in_mlflow: str | None) -> bool:
    """Whether MLflow's ``in_mlflow`` is a late write of an earlier move: a version the alias
    held before the log's confirmed head, found soon after that head was applied."""
    if head is None or head.pending or in_mlflow is None:
        return False
    if dt.datetime.now(dt.UTC) - head.moved_at > LATE_WRITE_WINDOW:
        return False
    return in_mlflow in {m.to_version for m in log.history(head.alias) if m.id < head.id}


def _apply(reg: Registry, alias: str, version: str | None) -> None:
    """Set ``alias`` in MLflow, or remove it for None."""
    if version is None:
        reg.delete_alias(alias)
    else:
        reg.set_alias(alias, version)


def _reconcile(reg: Registry, log: AliasLog, alias: str, by: str | None = None) -> Move | None:
    """Bring the log in step with MLflow; returns the move it finished or recorded, if any.

    * A pending move (its process died between the log and MLflow, or is setting MLflow right
      now) is finished: the MLflow alias is set to its version, unless MLflow moved elsewhere
      meanwhile. Setting the same version twice is harmless.
    * MLflow holding the alias elsewhere than the log says is recorded as an ``external`` move
      (serving follows MLflow, so that is what was live from now on).
    """
    head, in_mlflow = _read_both(reg, log, alias)
    if head is not None and head.pending:
        if in_mlflow == head.from_version:
            logger.info("finishing the interrupted move #%s of %s", head.id, alias)
            _apply(reg, alias, head.to_version)
            return log.confirm(head.id)
        if in_mlflow == head.to_version:
            return log.confirm(head.id)
    logged = None if head is None else head.to_version
    if in_mlflow == logged:
        return None
    if _late_write(log, head, in_mlflow):
        logger.warning(
            "%s went back to v%s in MLflow after move #%s to v%s: a late write of an earlier "
            "move; restoring v%s", alias, in_mlflow, head.id, logged, logged,
        )  # fmt: skip
        _apply(reg, alias, logged)
        return None
    logger.warning("%s is %s in MLflow but %s in the log", alias, in_mlflow, logged)
    return log.move(
        alias,
        in_mlflow,
        logged,
        by or actor(),
        f"found on {label(in_mlflow)} in MLflow, not {label(logged)}: moved outside recsys "
        "(by hand, or before the alias log existed)",
        EXTERNAL,
    )


def move_alias(
    reg: Registry,
    log: AliasLog,
    alias: str,
    version: str,
    actor: str,
    reason: str,
    kind: str = PROMOTE,
    expected_from: str | None | EllipsisType = ...,
) -> Move:
    """Move ``alias`` to ``version`` in the log (compare-and-set) and then in MLflow.

    ``expected_from`` is the version the caller decided against (default: the logged one); if the
    alias moved since, ``AliasConflict``. Safe to retry: when the log already holds ``version``
    (an earlier attempt got that far), MLflow is brought in step and that move is returned.
    """
    version = str(version)
    reg.version(version)  # an unknown version raises here, before anything is recorded
    with mover_lock(log, alias):
        return _move(reg, log, alias, version, actor, reason, kind, expected_from)


def _move(
    reg: Registry,
    log: AliasLog,
    alias: str,
    version: str,
    actor: str,
    reason: str,
    kind: str,
    expected_from: str | None | EllipsisType,
) -> Move:
    _reconcile(reg, log, alias, actor)
    if log.current(alias) == version:
        head = log.head(alias)
        assert head is not None
        return head
    expected = log.current(alias) if expected_from is ... else expected_from
    moved = log.move(alias, version, expected, actor, reason, kind, pending=True)
    # If MLflow fails here the move stays pending; the next move_alias, rollback or reconcile
    # finishes it.
    reg.set_alias(alias, version)
    return log.confirm(moved.id)


def end_alias(
    reg: Registry, log: AliasLog, alias: str, actor: str, reason: str, expected_from: str
) -> Move:
    """Remove ``alias``, recorded as an ``end`` move, if it still holds ``expected_from``."""
    with mover_lock(log, alias):
        _reconcile(reg, log, alias, actor)
        moved = log.move(alias, None, str(expected_from), actor, reason, END, pending=True)
        reg.delete_alias(alias)
        return log.confirm(moved.id)


def rollback(reg: Registry, log: AliasLog, actor: str, reason: str, alias: str = CHAMPION) -> Move:
    """Move ``alias`` back to the version before the current one (see ``AliasLog.chain``).

    Allowed while promotions are blocked: rolling back is how an operator gets out of trouble.
    """
    with mover_lock(log, alias):
        _reconcile(reg, log, alias, actor)
        chain = log.chain(alias)
        if len(chain) < 2:
            raise NothingToRollBack(
                f"nothing to roll back to: {alias} has no earlier version in the alias log"
            )
        if chain[-2] is None:
            raise NothingToRollBack(f"before {label(chain[-1])}, {alias} was not set")
        target = chain[-2]
        reg.version(target)
        return _move(reg, log, alias, target, actor, reason, ROLLBACK, chain[-1])
