"""Moving an alias: the alias log first, then MLflow, so every move is recorded and compare-and-set.

``move_alias`` writes the log first (the move is *pending*), then MLflow, then confirms the move;
``moved_at`` is when MLflow took it. If the process dies in between, the next ``move_alias``,
``rollback`` or ``reconcile`` finishes the pending move (re-applies the MLflow alias), so retrying a
promotion is safe and records nothing twice. An alias that MLflow holds elsewhere than the log says
(set by hand in the MLflow UI, or before this log existed) is recorded as an ``external`` move when
first noticed: MLflow is what serving loads, so it is the truth the log catches up with.
"""

from __future__ import annotations

import logging
from types import EllipsisType
from typing import TYPE_CHECKING

from recsys.config import CHAMPION
from recsys.registry.alias_log import (
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
            reg.set_alias(alias, head.to_version)
            return log.confirm(head.id)
        if in_mlflow == head.to_version:
            return log.confirm(head.id)
    logged = None if head is None else head.to_version
    if in_mlflow == logged:
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
    reconcile(reg, log, alias, actor)
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


def rollback(reg: Registry, log: AliasLog, actor: str, reason: str, alias: str = CHAMPION) -> Move:
    """Move ``alias`` back to the version before the current one (see ``AliasLog.chain``).

    Allowed while promotions are blocked: rolling back is how an operator gets out of trouble.
    """
    reconcile(reg, log, alias, actor)
    chain = log.chain(alias)
    if len(chain) < 2:
        raise NothingToRollBack(
            f"nothing to roll back to: {alias} has no earlier version in the alias log"
        )
    if chain[-2] is None:
        raise NothingToRollBack(f"before {label(chain[-1])}, {alias} was not set")
    return move_alias(reg, log, alias, chain[-2], actor, reason, ROLLBACK, expected_from=chain[-1])
