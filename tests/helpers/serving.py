"""Serving configs for the tests."""

from recsys.config import ServingConfig

# Without API keys: the tests of what the API answers; tests/integration/test_auth.py tests keys.
OPEN = ServingConfig(require_keys=False)
