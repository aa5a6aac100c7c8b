"""Closed-loop HTTP load generator for ``bench/serve.py``, run as its own process.

    .venv/bin/python bench/loadgen.py --port 8000 --requests reqs.json --clients 8 --seconds 15 \
        --out samples.json

Each of ``--clients`` threads holds one keep-alive ``http.client`` connection and sends the next
request as soon as the previous answer is read (no think time). Requests come from ``--requests``
(a JSON list of ``{"method", "path", "body"}``, ``body`` a JSON value or null); thread ``i`` starts
at a different offset, so every level sends the same mix. Samples started during the first
``--warmup`` seconds are dropped. The output holds one ``[start, seconds, status, version]`` per
request: ``start`` is wall-clock epoch seconds (to line up with events in the parent), ``status``
0 for an exception, ``version`` the ``X-Model-Version`` header ("" when absent).
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


def client_loop(
    host: str,
    port: int,
    requests: list[tuple[str, str, bytes | None]],
    offset: int,
    deadline: float,
    out: list[tuple[float, float, int, str]],
) -> None:
    """Send requests in order from ``offset`` until ``deadline`` (perf_counter); append samples."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    headers = {"Content-Type": "application/json", "Connection": "keep-alive"}
    i = offset
    while time.perf_counter() < deadline:
        method, path, body = requests[i % len(requests)]
        i += 1
        start_wall, start = time.time(), time.perf_counter()
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            status, version = resp.status, resp.getheader(VERSION_HEADER) or ""
        except (OSError, http.client.HTTPException):
            conn.close()  # reconnects on the next request
            status, version = 0, ""
        out.append((start_wall, time.perf_counter() - start, status, version))
    conn.close()


def run(
    host: str,
    port: int,
    requests: list[dict[str, Any]],
    clients: int,
    seconds: float,
    warmup: float,
) -> dict[str, Any]:
    """Run ``clients`` threads for ``warmup + seconds``; returns the kept samples and the window."""
    prepared = [
        (r["method"], r["path"], None if r.get("body") is None else json.dumps(r["body"]).encode())
        for r in requests
    ]
    stride = max(1, len(prepared) // clients)
    per_thread: list[list[tuple[float, float, int, str]]] = [[] for _ in range(clients)]
    t0_wall, t0 = time.time(), time.perf_counter()
    deadline = t0 + warmup + seconds
    threads = [
        threading.Thread(
            target=client_loop,
            args=(host, port, prepared, i * stride, deadline, per_thread[i]),
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
    args = parser.parse_args()
    requests = json.loads(args.requests.read_text())
    result = run(args.host, args.port, requests, args.clients, args.seconds, args.warmup)
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
