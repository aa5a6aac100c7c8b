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
