"""The demo's HTTP client waits out a key's rate limit (429 + Retry-After) instead of failing."""

import json
import threading
import time
import urllib.error
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from recsys import local_airflow


def _server(limited: int):
    """Answers 429 (Retry-After: 1) to the first ``limited`` requests, then 200 with JSON."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            seen.append((time.monotonic(), self.headers.get("Authorization")))
            if len(seen) <= limited:
                self.send_response(429)
                self.send_header("Retry-After", "1")
                self.end_headers()
                return
            body = json.dumps({"n": len(seen)}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/x", seen


def test_a_429_is_waited_out_as_retry_after_says():
    server, url, seen = _server(limited=2)
    try:
        assert local_airflow.get_json(url, key="k") == {"n": 3}
        assert [auth for _, auth in seen] == ["Bearer k"] * 3
        assert seen[1][0] - seen[0][0] >= 0.95 and seen[2][0] - seen[1][0] >= 0.95
    finally:
        server.shutdown()


def test_a_limit_that_never_lifts_still_fails():
    server, url, seen = _server(limited=100)
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            local_airflow._json(local_airflow.urllib.request.Request(url), 5.0, tries=2)
        assert err.value.code == 429 and len(seen) == 2
    finally:
        server.shutdown()
