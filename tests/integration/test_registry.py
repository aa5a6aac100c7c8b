"""Registry against a real MLflow store: what an alias read answers, and setting an alias twice."""

from __future__ import annotations

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import BAD_REQUEST, TEMPORARILY_UNAVAILABLE

from recsys.config import CHAMPION
from recsys.registry.client import Registry


@pytest.fixture
def reg(settings) -> Registry:
    return Registry(settings)


def _add_version(reg: Registry, tmp_path) -> str:
    try:
        reg.client.get_registered_model(reg.name)
    except MlflowException:
        reg.client.create_registered_model(reg.name)
    return str(reg.client.create_model_version(reg.name, source=tmp_path.as_uri()).version)


def test_alias_is_none_only_when_mlflow_says_it_does_not_exist(reg, tmp_path, monkeypatch):
    assert reg.alias(CHAMPION) is None  # no registered model yet
    v1 = _add_version(reg, tmp_path)
    assert reg.alias(CHAMPION) is None  # the model, but no alias
    reg.set_alias(CHAMPION, v1)
    assert str(reg.alias(CHAMPION).version) == v1

    def busy(*_args, **_kwargs):
        raise MlflowException("database is locked", TEMPORARILY_UNAVAILABLE)

    monkeypatch.setattr(reg.client, "get_model_version_by_alias", busy)
    with pytest.raises(MlflowException, match="database is locked"):
        reg.alias(CHAMPION)  # not "no champion": callers must not act on a failed read


def test_set_alias_survives_a_racing_setter_of_the_same_alias(reg, tmp_path, monkeypatch):
    v1, v2 = _add_version(reg, tmp_path), _add_version(reg, tmp_path)
    real_set = reg.client.set_registered_model_alias
    calls: list[str] = []
    racer = [v1]

    def raced(name, alias, version):
        calls.append(version)
        if racer:  # another process inserts the alias between MLflow's read and insert
            real_set(name, alias, racer.pop())
            raise MlflowException("UNIQUE constraint failed: registered_model_aliases", BAD_REQUEST)
        return real_set(name, alias, version)

    monkeypatch.setattr(reg.client, "set_registered_model_alias", raced)
    reg.set_alias(CHAMPION, v2)
    assert calls == [v2, v2] and str(reg.alias(CHAMPION).version) == v2

    calls.clear()
    with pytest.raises(MlflowException):
        reg.set_alias(CHAMPION, "99")  # no such version: said at once, not tried again
    assert calls == ["99"] and str(reg.alias(CHAMPION).version) == v2
