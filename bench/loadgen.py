"""Closed-loop HTTP load generator for ``bench/serve.py``, run as its own process.

    .venv/bin/python bench/loadgen.py --port 8000 --requests reqs.json --clients 8 --seconds 15 \
        --out samples.json

Each of ``--clients`` threads holds one keep-alive ``http.client`` connection and sends the next
request as soon as the previous answer is read (no think time). Requests come from ``--requests``
(a JSON list of ``{"method", "path", "body"}``, ``body`` a JSON value or null); thread ``i`` starts
at a different offset, so every level sends the same mix. Samples started during the first
``--warmup`` seconds are dropped. The output holds one ``[start, seconds, status, version]`` per
request: ``start`` is wall-clock epoch seconds (to line up with events in the parent), ``status``
0 for an exception, ``version`` the ``X-Model-Version`` header ("" when absent; for status 0 the
exception's class name, e.g. ``ConnectionRefusedError``).

A body holding the string ``EVENT_ID_SLOT`` gets a fresh id there on every send
(``<--id-prefix><client>-<n>``), and its samples carry that id as a fifth element, so a caller
can tell which events the server acknowledged (``bench/load.py``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
from pathlib import Path
from typing import Any

VERSION_HEADER = "X-Model-Version"
EVENT_ID_SLOT = "<event_id>"
_SLOT = json.dumps(EVENT_ID_SLOT).encode()
Sample = tuple  # (start, seconds, status, version) or (..., event_id)


def client_loop(
    host: str,
    port: int,
    requests: list[tuple[str, str, bytes | None]],
    offset: int,
    deadline: float,
    out: list[Sample],
    id_prefix: str = "",
    extra_headers: dict[str, str] | None = None,
) -> None:
    """Send requests in order from ``offset`` until ``deadline`` (perf_counter); append samples.

    ``id_prefix`` names this client in the ids that fill ``EVENT_ID_SLOT``."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    headers = {
        "Content-Type": "application/json",
        "Connection": "keep-alive",
        **(extra_headers or {}),
    }
    i = offset
    while time.perf_counter() < deadline:
        method, path, body = requests[i % len(requests)]
        i += 1
        event_id = None
        if body is not None and _SLOT in body:
            event_id = f"{id_prefix}{i}"
            body = body.replace(_SLOT, json.dumps(event_id).encode())
        start_wall, start = time.time(), time.perf_counter()
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            answer = resp.read()
            status, version = resp.status, resp.getheader(VERSION_HEADER) or ""
        except (OSError, http.client.HTTPException) as err:
            conn.close()  # reconnects on the next request
            status, version, answer = 0, type(err).__name__, b""
        sample = (start_wall, time.perf_counter() - start, status, version)
        if event_id is not None:  # an event's answer says whether it was stored as new
            new = status == 201 and json.loads(answer).get("stored") is True
            sample = (*sample, event_id, new)
        out.append(sample)
    conn.close()


def run(
    host: str,
    port: int,
    requests: list[dict[str, Any]],
    clients: int,
    seconds: float,
    warmup: float,
    id_prefix: str = "",
    extra_headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``clients`` threads for ``warmup + seconds``; returns the kept samples and the window."""
    prepared = [
        (r["method"], r["path"], None if r.get("body") is None else json.dumps(r["body"]).encode())
        for r in requests
    ]
    stride = max(1, len(prepared) // clients)
    per_thread: list[list[Sample]] = [[] for _ in range(clients)]
    t0_wall, t0 = time.time(), time.perf_counter()
    deadline = t0 + warmup + seconds
    threads = [
        threading.Thread(
            target=client_loop,
            args=(
                host,
                port,
                prepared,
                i * stride,
                deadline,
                per_thread[i],
                f"{id_prefix}{i}-",
                extra_headers,
            ),  # fmt: skip
            daemon=True,
        )
        for i in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    begin = t0_wall + warmup
    samples = sorted(s for samples in per_thread for s in samples if s[0] >= begin)
    return {"begin": begin, "seconds": seconds, "clients": clients, "samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--requests", type=Path, required=True, help="JSON list of requests")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds sent but not kept")
    parser.add_argument("--out", type=Path, required=True, help="where to write the samples")
    parser.add_argument("--id-prefix", default="", help="start of the ids put in EVENT_ID_SLOT")
    parser.add_argument("--key", help="an API key, sent as Authorization: Bearer KEY")
    args = parser.parse_args()
    requests = json.loads(args.requests.read_text())
    extra = {"Authorization": f"Bearer {args.key}"} if args.key else None
    result = run(
        args.host, args.port, requests, args.clients, args.seconds, args.warmup, args.id_prefix,
        extra,
    )  # fmt: skip
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
