"""Model versions already in users' registries keep loading and serving after the code moves.

``tests/fixtures/model_7b46c2f/model`` is a model version exactly as ``Registry.register`` stored
it at commit 7b46c2f, before the library moved into one folder per plane: its ``pyfunc_model.py``
imports ``recsys.recommender``, the path of that time.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.helpers.registry import stored_champion
from tests.helpers.serving import OPEN

ITEM_IDS = [f"i{i}" for i in range(1, 13)]  # what generate.py stored


@pytest.fixture
def stored(backend_settings, tmp_path):
    """The fixture registered as version 1 and made champion; the event store on each backend."""
    return backend_settings, stored_champion(backend_settings, tmp_path)


def test_a_version_registered_before_the_move_loads_as_pyfunc(stored):
    import mlflow
    import pandas as pd

    settings, _ = stored
    model = mlflow.pyfunc.load_model(f"models:/{settings.registered_model}@champion")
    out = model.predict(pd.DataFrame({"history": [["i1", "i2"], ["i5"]]}), params={"k": 4})
    lists = out["recommendations"].tolist()
    assert [len(r) for r in lists] == [4, 4]
    assert all(set(r) <= set(ITEM_IDS) for r in lists)
    assert not {"i1", "i2"} & set(lists[0]) and "i5" not in lists[1]  # seen items left out


def test_a_version_registered_before_the_move_serves(stored):
    from recsys.serving.app import create_app

    settings, version = stored
    with TestClient(create_app(settings, poll_seconds=0, serving=OPEN)) as client:
        resp = client.post("/recommendations", json={"items": ["i3", "i4"], "k": 5})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["model_version"] == version and not body["cold_start"]
        ranked = [r["item_id"] for r in body["items"] if r["source"] == "model"]
        assert ranked and set(ranked) <= set(ITEM_IDS) - {"i3", "i4"}
