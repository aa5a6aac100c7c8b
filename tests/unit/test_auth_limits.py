"""API keys' pure parts, the rate limiter and the in-flight limit."""

import asyncio

import pytest

from recsys.serving.auth import RateLimiter, bearer, parse_scopes, split_key
from recsys.serving.edge import EdgeMiddleware
from recsys.serving.metrics import Metrics


def test_scopes_keys_and_headers_parse_strictly():
    assert parse_scopes("events:write, admin,events:write") == ("events:write", "admin")
    for bad in ("", "events:read", "admin,root"):
        with pytest.raises(ValueError, match="scopes must be among"):
            parse_scopes(bad)
    assert split_key("rk_ab12_s3cr-t") == ("ab12", "s3cr-t")
    assert split_key("rk_ab12") is None and split_key("xx_a_b") is None
    assert bearer("Bearer rk_a_b") == "rk_a_b" and bearer("bearer  rk_a_b ") == "rk_a_b"
    assert bearer("Basic abc") is None and bearer(None) is None and bearer("Bearer ") is None


def test_the_bucket_allows_its_burst_then_its_rate_per_key():
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)  # the next token in half a second
    assert limiter.take("b") == 0.0  # another key has its own bucket
    now[0] = 0.5
    assert limiter.take("a") == 0.0 and limiter.take("a") > 0
    now[0] = 100.0  # refilled, but never beyond the burst
    assert [limiter.take("a") for _ in range(4)][-1] > 0


def test_requests_beyond_the_in_flight_limit_are_shed_with_429():
    release = asyncio.Event()

    async def slow_app(scope, receive, send):
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    holder = type("Holder", (), {"current": None})()
    edge = EdgeMiddleware(slow_app, Metrics(), holder, max_body=1000, max_in_flight=1)

    async def call():
        sent = []

        async def send(message):
            sent.append(message)

        async def receive():
            return {"type": "http.request", "body": b""}

        scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
        await edge(scope, receive, send)
        return sent[0]["status"], dict(sent[0]["headers"]) if sent[0].get("headers") else {}

    async def main():
        first = asyncio.create_task(call())
        await asyncio.sleep(0)  # the first request is now in flight
        second = await call()
        release.set()
        return await first, second

    (first, _), (second, headers) = asyncio.run(main())
    assert (first, second) == (200, 429)
    assert headers.get(b"retry-after") == b"1"
    assert edge.in_flight == 0
