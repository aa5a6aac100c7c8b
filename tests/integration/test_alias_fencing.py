"""Fenced alias moves: MLflow's alias and the alias log agree after promotes, rollbacks and
MLflow's late writes interleave. On SQLite and on PostgreSQL; MLflow is a stand-in whose writes
can be held back or land late, so each interleaving is forced, not hoped for."""

import threading
from types import SimpleNamespace

from recsys.registry import aliases
from recsys.registry.alias_log import AliasLog

ME, OTHER = "cli:me@host", "airflow:recsys_online_guard/run"


class SlowMLflow:
    """Holds aliases like MLflow; a write can be held until released, or land later."""

    def __init__(self) -> None:
        self.held: dict[str, str] = {}
        self.gate: threading.Event | None = None  # the next write waits for it
        self.late: list[tuple[str, str]] = []  # writes the client gave up on, applied later
        self.give_up_next = False
        self.writing = threading.Event()  # set while a held write waits

    def version(self, version: str) -> SimpleNamespace:
        return SimpleNamespace(version=version)

    def alias(self, alias: str) -> SimpleNamespace | None:
        return SimpleNamespace(version=self.held[alias]) if alias in self.held else None

    def set_alias(self, alias: str, version: str) -> None:
        if self.give_up_next:  # the request reached the server; the client timed out
            self.give_up_next = False
            self.late.append((alias, version))
            raise TimeoutError("MLflow did not answer in time")
        gate, self.gate = self.gate, None
        if gate is not None:
            self.writing.set()
            assert gate.wait(30)
        self.held[alias] = version

    def land_late_writes(self) -> None:
        for alias, version in self.late:
            self.held[alias] = version
        self.late.clear()


def _state(log: AliasLog, mlflow: SlowMLflow) -> tuple:
    head = log.head("champion")
    return mlflow.held.get("champion"), head.to_version, head.pending


def test_a_move_waits_for_one_still_writing_mlflow(store_url):
    log, mlflow = AliasLog(store_url), SlowMLflow()
    aliases.move_alias(mlflow, log, "champion", "1", ME, "first")
    mlflow.gate = gate = threading.Event()
    promote = threading.Thread(
        target=aliases.move_alias, args=(mlflow, log, "champion", "2", ME, "better")
    )
    promote.start()
    assert mlflow.writing.wait(10)  # recorded, now writing MLflow (held)
    rollback = threading.Thread(target=aliases.rollback, args=(mlflow, log, OTHER, "CTR dropped"))
    rollback.start()
    rollback.join(1.0)
    assert rollback.is_alive()  # it waits for the promotion's MLflow write, not past it
    gate.set()
    promote.join(30)
    rollback.join(30)
    assert _state(log, mlflow) == ("1", "1", False)
    assert [(m.kind, m.from_version, m.to_version) for m in log.history("champion")] == [
        ("promote", None, "1"),
        ("promote", "1", "2"),
        ("rollback", "2", "1"),
    ]
    log.engine.dispose()


def test_a_late_mlflow_write_is_undone_not_recorded_as_an_external_move(store_url):
    log, mlflow = AliasLog(store_url), SlowMLflow()
    aliases.move_alias(mlflow, log, "champion", "1", ME, "first")
    mlflow.give_up_next = True
    try:
        aliases.move_alias(mlflow, log, "champion", "2", ME, "better")
    except TimeoutError:
        pass  # the move stays pending; its write is still on its way
    aliases.move_alias(mlflow, log, "champion", "3", OTHER, "best")  # finishes v2, then moves
    assert _state(log, mlflow) == ("3", "3", False)
    mlflow.land_late_writes()  # MLflow's retry of the v2 write lands now
    assert mlflow.held["champion"] == "2"
    assert aliases.reconcile(mlflow, log, "champion") is None
    assert _state(log, mlflow) == ("3", "3", False)
    kinds = [m.kind for m in log.history("champion")]
    assert kinds == ["promote", "promote", "promote"]  # no "external" regression recorded
    moved = aliases.rollback(mlflow, log, OTHER, "CTR dropped")  # and a rollback still works
    assert moved.to_version == "2" and _state(log, mlflow) == ("2", "2", False)
    log.engine.dispose()


def test_a_move_by_hand_to_a_new_version_is_still_recorded_as_external(store_url):
    log, mlflow = AliasLog(store_url), SlowMLflow()
    aliases.move_alias(mlflow, log, "champion", "1", ME, "first")
    mlflow.held["champion"] = "7"  # set in the MLflow UI: never live before
    found = aliases.reconcile(mlflow, log, "champion")
    assert (found.kind, found.from_version, found.to_version) == ("external", "1", "7")
    log.engine.dispose()
