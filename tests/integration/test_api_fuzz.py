"""Fuzzing the serving API from its own OpenAPI schema (schemathesis 4, in-process over ASGI).

Valid and invalid requests for every operation: none may answer 5xx, every 4xx says why in a JSON
``detail``, the app still answers ``/health`` afterwards, and every event it accepted passes the
validation gate after collection. The app is built as in ``test_serve.py`` (a trained champion
behind a real registry and event store), smaller, with the event store on SQLite and PostgreSQL.
"""

import datetime as dt

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from recsys.config import PipelineConfig, Settings, TrainConfig
from recsys.data import collect, events, features, synthetic, validate
from recsys.data.lake import Interval
from recsys.release import pipeline, promote
from recsys.serving.app import create_app
from tests.helpers.serving import OPEN

pytestmark = pytest.mark.slow

CFG = PipelineConfig(train=TrainConfig(epochs=1))
START = dt.datetime(2024, 1, 1)
FUZZ = settings(
    max_examples=50, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


@pytest.fixture(scope="module")
def settings_(tmp_path_factory, module_store_url):
    home = str(tmp_path_factory.mktemp("api-fuzz"))
    return Settings.from_env({"RECSYS_HOME": home, "RECSYS_EVENT_STORE_URL": module_store_url})


@pytest.fixture(scope="module")
def app(settings_):
    """The API over a champion (v1) trained on one day of a small synthetic stream."""
    store = events.EventStore(settings_.event_store_url)
    store.append(events.prepare_rows(synthetic.generate(n_users=30, n_items=20, days=1)))
    day = Interval(START, START + dt.timedelta(days=1))
    collect.run(settings_, day)
    assert validate.run(settings_, day)["success"]
    features.run(settings_, day)
    trained = pipeline.train(settings_, "full", CFG)
    pipeline.evaluate(settings_, trained["run_id"], CFG)
    version = pipeline.register(settings_, trained["run_id"])["version"]
    assert promote.run(settings_, version, CFG)["promoted"]
    return create_app(settings_, poll_seconds=0, serving=OPEN)


@pytest.fixture(scope="module")
def api_schema(app):
    """The app's schema; schemathesis starts the app's lifespan (the model loads) on first use."""
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def _check(case) -> None:
    response = case.call()
    request = f"{case.method} {case.formatted_path} {case.query} {case.body!r:.300}"
    assert response.status_code < 500, f"{request} -> {response.status_code} {response.text[:500]}"
    if response.status_code >= 400:
        detail = response.json().get("detail")  # raises when the body is not JSON
        assert detail, f"{request} -> {response.status_code} without a detail: {response.text}"


# schemathesis.pytest.from_fixture cannot run under pytest 9 (it sets the removed Node._nodeid),
# so each operation's strategy runs under a plain Hypothesis @given.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_request_gets_a_5xx_and_every_4xx_says_why(api_schema, mode):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    names = {f"{op.method.upper()} {op.path}" for op in operations}
    assert {"GET /recommendations/{user_id}", "POST /recommendations", "POST /events"} <= names
    for operation in operations:
        if (
            mode is GenerationMode.NEGATIVE
            and not operation.body
            and not operation.query
            and (not operation.path_parameters)
        ):
            continue  # nothing to make invalid
        FUZZ(given(case=operation.as_strategy(mode))(lambda case: _check(case)))()


def test_the_app_still_answers_health_afterwards(api_schema):
    response = api_schema["/health"]["GET"].Case().call()
    assert response.status_code == 200 and response.json()["status"] == "ok"
    assert response.json()["model_version"] == "1"


def test_every_event_the_fuzzer_got_stored_passes_the_gate(api_schema, settings_):
    from recsys.data import ingest

    store = events.EventStore(settings_.event_store_url)
    since = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(hours=6)
    _, last = store.bounds()
    fuzzed = store.read_interval(since, last + dt.timedelta(seconds=1))
    assert len(fuzzed) > 0  # the positive fuzzing posted events
    result = ingest.run(settings_, Interval(since, last + dt.timedelta(seconds=1)))
    checked = result["validation"]
    assert checked["success"] and checked["rejected_rows"] == 0, checked["summary"]
    assert checked["rows"] == len(fuzzed)
