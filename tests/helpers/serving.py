"""Serving configs and clients for the tests."""

from fastapi.testclient import TestClient

from recsys.config import ServingConfig

# Without API keys: the tests of what the API answers; tests/integration/test_auth.py tests keys.
OPEN = ServingConfig(require_keys=False)


def keyed_client(settings, serving: ServingConfig | None = None, scopes: str = "admin"):
    """A test client of the API with keys required, sending a fresh key with ``scopes``: its
    clicks are vouched for, so the online guard and A/B readouts count them."""
    from recsys.data.events import EventStore
    from recsys.serving.app import create_app
    from recsys.serving.auth import KeyStore

    made = KeyStore(EventStore(settings.event_store_url).engine).create(scopes, "tests")
    app = create_app(settings, poll_seconds=0, serving=serving or ServingConfig(key_cache_s=0))
    client = TestClient(app, headers={"Authorization": f"Bearer {made['key']}"})
    client.key_id = made["id"]
    return client


def scrape(text: str) -> dict[str, float]:
    """A ``/metrics`` exposition as ``{'name{label="v",...}': value}``, labels sorted; parsing it
    checks it is valid Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families

    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            found[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return found
