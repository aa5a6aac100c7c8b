"""Serving benchmark: our API versus ``mlflow models serve``, same champion, same load.

    .venv/bin/python bench/serve.py                          # MovieLens-100K, 15 s per level
    .venv/bin/python bench/serve.py --seconds 2 --clients 1,8 --no-mlflow   # smoke
    .venv/bin/python bench/serve.py --home ~/.recsys         # an existing home with a champion

Setup (not timed): MovieLens-100K into the event store of a temporary ``RECSYS_HOME``, one
interval covering all of it through collect, validate and features, a full model trained for
``--epochs`` (the benchmark measures serving, not quality), registered and forced to champion.
With ``--home``, a champion already there is served as it is (none: one is built there). For the
reload, the champion's run is registered again as a second version.

Both servers run as subprocesses with one worker each: ``recsys serve`` (uvicorn, one process,
torch at ``ServingConfig.torch_threads`` intra-op threads) and ``mlflow models serve -w 1
--env-manager local`` (uvicorn, torch's default threads). ``recsys serve`` runs twice: as shipped,
and with ``--state-cache 0`` (unless ``--no-uncached``), where every answer runs the model; both
with ``--no-auth``, and a third time as shipped, with API keys (a ``recommendations:read`` key on
every request, its rate limit raised above the load with ``--rate-per-key``): the "throughput
with API keys / --no-auth" lines compare it with the first. No
history changes during the levels, so as shipped nearly every answer after a user's first comes
from the state cache: the "state hits" column says how many did. A load generator in its own process
drives each: 1, 8 and 32 closed-loop clients on keep-alive connections, the same users in the
same order. It is ``wrk`` when it is on PATH (``apt install wrk``; ``bench/wrk.lua`` replays the
requests): written in C, it takes little of the cores the servers share, where
``bench/loadgen.py`` (Python threads; used otherwise, or with ``--loadgen python``) competes for
them. Our API gets ``GET /recommendations/{user}?k=10`` and reads the history itself; MLflow gets
that user's history as read from the same store (``dataframe_split``, ``params.k=10``).

The servers run side by side, idle but for the one under load, and each one's ``--seconds`` at a
level are split into ``--rounds`` interleaved rounds (each server goes first in turn): a shared
machine that slows down for a minute slows all of them alike, rather than whichever ran then. A
row gives the mean throughput of its rounds and the worst round's latency percentiles.

Reload: a second API instance polling every ``--poll-seconds`` serves 8 clients while the
``champion`` alias moves to the second version; it reports the percentiles of the 5 s after the
move, the errors, and the time until the first answer from the new version. Results are logged to
the MLflow experiment ``bench-serve`` of the benchmark's home unless ``--no-mlflow``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from recsys.config import CHAMPION, PipelineConfig, Settings

HERE = Path(__file__).resolve().parent
LOADGEN = HERE / "loadgen.py"
WRK_SCRIPT = HERE / "wrk.lua"
BIN = Path(sys.executable).parent
K = 10
RELOAD_CLIENTS = 8
RELOAD_WINDOW = 5.0  # seconds after the alias move whose latencies are reported
OURS, MLFLOW = "recsys serve", "mlflow models serve"
OURS_NO_CACHE = "recsys serve --state-cache 0"
OURS_KEYS = "recsys serve (API keys)"  # as shipped: the other two run --no-auth
SHORT = {OURS: "recsys", OURS_NO_CACHE: "recsys_nocache", OURS_KEYS: "recsys_keys",
         MLFLOW: "mlflow"}  # fmt: skip  # file and key names


# -- setup ------------------------------------------------------------------------------------
def build_champion(settings: Settings, epochs: int, cache: Path) -> None:
    """MovieLens-100K -> one interval -> features -> a full model, registered and promoted."""
    import pandas as pd
    from common import champion_from_store

    from recsys.data import events
    from recsys.data.movielens import load_ml100k

    store = events.EventStore(settings.event_store_url)
    events.import_frame(store, pd.DataFrame.from_records(load_ml100k(None, cache)), "rating")
    champion_from_store(settings, epochs, "MovieLens-100K")


def second_version(settings: Settings) -> tuple[str, str]:
    """(champion, new version): the champion's run registered again, for the reload."""
    from recsys.registry.client import Registry
    from recsys.release import pipeline

    champion = Registry(settings).alias(CHAMPION)
    if champion is None:
        raise SystemExit(f"no {CHAMPION} in {settings.tracking_uri}")
    return str(champion.version), pipeline.register(settings, champion.run_id)["version"]


def request_mix(settings: Settings, n_users: int, seed: int) -> tuple[list, list]:
    """(ours, mlflow's): one request per sampled user, in the same order for both servers."""
    import sqlalchemy as sa

    from recsys import schema as S
    from recsys.data.events import EventStore, events_table

    store = EventStore(settings.event_store_url)
    with store.engine.connect() as conn:
        query = sa.select(events_table.c[S.USER_ID]).distinct()
        users = sorted(str(row[0]) for row in conn.execute(query))
    rng = np.random.default_rng(seed)
    picked = [users[i] for i in rng.choice(len(users), min(n_users, len(users)), replace=False)]
    max_len = PipelineConfig().model.max_len
    ours, theirs = [], []
    for user in picked:
        ours.append({"method": "GET", "path": f"/recommendations/{user}?k={K}", "body": None})
        body = {
            "dataframe_split": {"columns": ["history"], "data": [[store.history(user, max_len)]]},
            "params": {"k": K},
        }
        theirs.append({"method": "POST", "path": "/invocations", "body": body})
    return ours, theirs


# -- processes ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict[str, str], log: Path, stack: ExitStack) -> subprocess.Popen:
    """Start ``cmd`` in its own process group, stopped as a group when ``stack`` closes."""
    out = log.open("w")
    proc = subprocess.Popen(
        cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    stack.callback(stop, proc, out)
    return proc


def stop(proc: subprocess.Popen, out: Any) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass
    out.close()


def wait_ready(proc: subprocess.Popen, url: str, log: Path, timeout: float = 300.0) -> float:
    """Seconds until ``url`` answers 200; exits with the log's tail if the process dies first."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            tail = log.read_text()[-3000:]
            raise SystemExit(f"{proc.args[:4]} exited with {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return time.perf_counter() - t0
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise SystemExit(f"{url} not ready after {timeout:.0f} s; log: {log}")


def check_answer(port: int, request: dict[str, Any], key: str | None = None) -> int:
    """Items in the answer to ``request``: a 200 with an empty list would be a hollow benchmark."""
    body = None if request["body"] is None else json.dumps(request["body"]).encode()
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{request['path']}",
        data=body,
        method=request["method"],
        headers=headers,
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        answer = json.loads(resp.read())
    if "items" in answer:  # ours
        return len(answer["items"])
    return len(answer["predictions"][0]["recommendations"])  # mlflow's pyfunc scoring server


def load(port: int, requests: Path, clients: int, seconds: float, out: Path,
         key: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Run the Python load generator in its own process and return its samples."""
    cmd = [sys.executable, str(LOADGEN), "--port", str(port), "--requests", str(requests)]
    cmd += ["--clients", str(clients), "--seconds", str(seconds), "--out", str(out)]
    cmd += ["--key", key] if key else []
    subprocess.run(cmd, check=True)
    return json.loads(out.read_text())


def write_tsv(requests: list[dict[str, Any]], path: Path) -> None:
    """``requests`` as ``bench/wrk.lua`` reads them: ``METHOD<TAB>PATH<TAB>BODY`` per line."""
    lines = []
    for r in requests:
        body = "" if r["body"] is None else json.dumps(r["body"])  # one line, tabs escaped
        lines.append(f"{r['method']}\t{r['path']}\t{body}")
    path.write_text("\n".join(lines) + "\n")


def load_wrk(port: int, requests: Path, clients: int, seconds: float,
             key: str | None = None) -> dict[str, float]:  # fmt: skip
    """``wrk`` (one thread, ``clients`` keep-alive connections) replaying ``requests`` (TSV):
    a one-second warm-up, then the measured run; returns what ``summarize`` returns."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not on PATH (apt install wrk), or use --loadgen python")
    url = f"http://127.0.0.1:{port}"

    def run(duration: int) -> dict[str, Any]:
        cmd = [wrk, "-t1", f"-c{clients}", f"-d{duration}s", "--timeout", "30s"]
        cmd += [
            "-s",
            str(WRK_SCRIPT),
            url,
            "--",
            str(requests),
            *([f"Bearer {key}"] if key else []),
        ]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        line = next((x for x in done.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
        if line is None:
            raise SystemExit(f"wrk printed no result:\n{done.stdout}\n{done.stderr}")
        return json.loads(line.removeprefix("WRK_JSON "))

    run(1)  # warm-up: connections, caches, the allocator
    r = run(max(1, round(seconds)))
    errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    duration = r["duration_us"] / 1e6
    return {
        "req_s": (r["requests"] - r["status"]) / duration,
        "p50_ms": r["p50_us"] / 1000,
        "p95_ms": r["p95_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
        "errors": errors,
        "requests": r["requests"],
    }


# -- statistics --------------------------------------------------------------------------------
def summarize(samples: list, seconds: float) -> dict[str, float]:
    """req/s (answers with 200), latency percentiles (ms, all answers) and errors."""
    lat = np.array([s[1] for s in samples]) * 1000 if samples else np.array([np.nan])
    errors = sum(1 for s in samples if s[2] != 200)
    p50, p95, p99 = np.percentile(lat, [50, 95, 99])
    return {
        "req_s": (len(samples) - errors) / seconds,
        "p50_ms": float(p50),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "errors": errors,
        "requests": len(samples),
    }


def reload_stats(run: dict[str, Any], moved_at: float, old: str, new: str) -> dict[str, Any]:
    """Latency around a champion move: the window after it, time to the first new answer."""
    samples = run["samples"]
    window = [s for s in samples if moved_at <= s[0] < moved_at + RELOAD_WINDOW]
    stats = summarize(window, RELOAD_WINDOW)
    first_new = min((s[0] + s[1] for s in samples if s[3] == new), default=None)
    stats["errors_whole_run"] = sum(1 for s in samples if s[2] != 200)
    stats["seconds_to_new_version"] = (
        first_new - moved_at if first_new is not None else float("nan")
    )
    started_after = first_new if first_new is not None else float("inf")
    stats["old_version_after_swap"] = sum(
        1 for s in samples if s[0] > started_after and s[3] == old
    )
    return stats


# -- the benchmark -------------------------------------------------------------------------------
def child_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(settings.as_env())
    env.update(
        MLFLOW_REGISTRY_URI=settings.tracking_uri,
        # mlflow models serve execs ``uvicorn`` by name: the venv's, even when not activated
        PATH=os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
    )
    return env


def bench_key(settings: Settings) -> str:
    """A ``recommendations:read`` key for the keyed server, made in the benchmark's home."""
    from recsys.data.events import EventStore
    from recsys.serving.auth import KeyStore

    engine = EventStore(settings.event_store_url).engine
    return KeyStore(engine).create("recommendations:read", "bench/serve.py")["key"]


def run_levels(
    args: argparse.Namespace, settings: Settings, work: Path, stack: ExitStack
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Start the servers, then load each at every client level in ``args.rounds`` interleaved
    rounds; returns (rows, server notes)."""
    env = child_env(settings)
    ours, theirs = request_mix(settings, args.users, args.seed)
    (work / "ours.json").write_text(json.dumps(ours))
    (work / "mlflow.json").write_text(json.dumps(theirs))
    write_tsv(ours, work / "ours.tsv")
    write_tsv(theirs, work / "mlflow.tsv")
    api_port, nocache_port, mlflow_port, keys_port = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    )
    key = bench_key(settings)

    def api_cmd(port: int) -> list[str]:
        return [
            str(BIN / "recsys"),
            "serve",
            "--port",
            str(port),
            "--poll-seconds",
            "10",
            "--no-auth",
        ]

    mlflow_cmd = [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/recsys@{CHAMPION}"]
    mlflow_cmd += ["--env-manager", "local", "-w", "1", "-h", "127.0.0.1", "-p", str(mlflow_port)]
    servers = {
        OURS: (api_cmd(api_port), api_port, "/ready", "ours.json"),
        OURS_NO_CACHE: ([*api_cmd(nocache_port), "--state-cache", "0"], nocache_port, "/ready",
                        "ours.json"),
        MLFLOW: (mlflow_cmd, mlflow_port, "/ping", "mlflow.json"),
        # As shipped (keys required), with a key rate above any level's load: the levels measure
        # what checking a key costs, not the limit (tests/integration/test_auth.py tests that).
        OURS_KEYS: ([c for c in api_cmd(keys_port) if c != "--no-auth"]
                    + ["--rate-per-key", "1000000"], keys_port, "/ready", "ours.json"),
    }  # fmt: skip
    keys = {OURS_KEYS: key}
    if args.no_uncached:
        del servers[OURS_NO_CACHE]
    procs, notes = {}, {}
    for name, (cmd, port, probe, reqs) in servers.items():
        log = work / f"{SHORT[name]}.log"
        procs[name] = proc = start(cmd, env, log, stack)
        startup = wait_ready(proc, f"http://127.0.0.1:{port}{probe}", log)
        notes[name] = {"command": " ".join(cmd), "startup_s": round(startup, 1), "log": str(log)}
        first = json.loads((work / reqs).read_text())[0]
        if (n := check_answer(port, first, keys.get(name))) != K:
            raise SystemExit(f"{name} answered {n} items instead of {K} to {first['path']}")
        print(f"{name}: ready in {startup:.1f} s ({' '.join(cmd[1:])})", flush=True)
    names = list(servers)
    cells: dict[tuple[str, int], list[dict[str, Any]]] = {
        (name, c): [] for name in names for c in args.clients
    }
    hits = {cell: [0.0, 0.0] for cell in cells}  # state cache hits, misses
    seconds = args.seconds / args.rounds
    for rnd in range(args.rounds):
        order = names[rnd % len(names) :] + names[: rnd % len(names)]  # each goes first in turn
        for clients in args.clients:
            for name in order:
                _, port, _, reqs = servers[name]
                before = state_cache_counts(port) if name != MLFLOW else None
                if args.loadgen == "wrk":
                    tsv = work / reqs.replace(".json", ".tsv")
                    stats = load_wrk(port, tsv, clients, seconds, keys.get(name))
                else:
                    out = work / f"{SHORT[name]}-{clients}-{rnd}.json"
                    samples = load(port, work / reqs, clients, seconds, out, keys.get(name))
                    stats = summarize(samples["samples"], seconds)
                if before is not None:
                    (h0, m0), (h1, m1) = before, state_cache_counts(port)
                    hits[name, clients][0] += h1 - h0
                    hits[name, clients][1] += m1 - m0
                cells[name, clients].append(stats)
                print(
                    f"  round {rnd + 1}/{args.rounds} {name:<30} {clients:>3} clients: "
                    f"{stats['req_s']:8.1f} req/s  p99 {stats['p99_ms']:7.1f} ms  "
                    f"errors {stats['errors']}",
                    flush=True,
                )  # fmt: skip
    for proc in procs.values():
        stop(proc, open(os.devnull))  # free the cores for the reload
    rows = []
    for (name, clients), rounds in cells.items():
        row = {"server": name, "clients": clients, **merge_rounds(rounds), "state_hit_pct": None}
        if name != MLFLOW:
            h, m = hits[name, clients]
            row["state_hit_pct"] = 100.0 * h / max(h + m, 1)
        rows.append(row)
    return rows, notes


def merge_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from a server's rounds at one level: the mean throughput, the worst round's
    latency percentiles, all errors and requests."""
    return {
        "req_s": statistics.fmean(r["req_s"] for r in rounds),
        **{key: max(r[key] for r in rounds) for key in ("p50_ms", "p95_ms", "p99_ms")},
        "errors": sum(r["errors"] for r in rounds),
        "requests": sum(r["requests"] for r in rounds),
        "rounds": len(rounds),
    }


def state_cache_counts(port: int) -> tuple[float, float]:
    """(hits, misses) of the served model's state cache so far, from ``/metrics``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    counts = {"hits": 0.0, "misses": 0.0}
    for line in text.splitlines():
        for kind in counts:
            if line.startswith(f"recsys_state_cache_{kind}_total"):
                counts[kind] += float(line.rsplit(" ", 1)[1])
    return counts["hits"], counts["misses"]


def run_reload(
    args: argparse.Namespace, settings: Settings, work: Path, stack: ExitStack
) -> dict[str, Any]:
    """8 clients on a fresh API instance while the champion alias moves to another version."""
    from recsys.registry.client import Registry

    old, new = second_version(settings)
    port = free_port()
    cmd = [str(BIN / "recsys"), "serve", "--port", str(port), "--no-auth"]
    cmd += ["--poll-seconds", str(args.poll_seconds)]
    log = work / "recsys-reload.log"
    proc = start(cmd, child_env(settings), log, stack)
    wait_ready(proc, f"http://127.0.0.1:{port}/ready", log)
    before, after = 4.0, RELOAD_WINDOW + 4.0
    gen = subprocess.Popen(
        [sys.executable, str(LOADGEN), "--port", str(port), "--requests", str(work / "ours.json")]
        + ["--clients", str(RELOAD_CLIENTS), "--seconds", str(before + after)]
        + ["--out", str(work / "reload.json")]
    )
    stack.callback(gen.kill)  # a no-op once it has finished
    time.sleep(1.0 + before)  # the load generator's warmup, then a steady start
    moved_at = time.time()
    Registry(settings).set_alias(CHAMPION, new)
    if gen.wait() != 0:
        raise SystemExit("the load generator failed during the reload")
    stats = reload_stats(json.loads((work / "reload.json").read_text()), moved_at, old, new)
    stop(proc, open(os.devnull))
    Registry(settings).set_alias(CHAMPION, old)  # leave the home as it was found
    return {"from_version": old, "to_version": new, **stats}


def report(rows: list[dict[str, Any]], reload: dict[str, Any], notes: dict[str, Any]) -> list[str]:
    lines = [
        f"{'server':<34}{'clients':>8}{'req/s':>10}{'p50 ms':>9}{'p95 ms':>9}"
        f"{'p99 ms':>9}{'errors':>8}{'state hits':>12}"
    ]
    for r in rows:
        hits = "-" if r["state_hit_pct"] is None else f"{r['state_hit_pct']:.1f}%"
        lines.append(
            f"{r['server']:<34}{r['clients']:>8}{r['req_s']:>10.1f}{r['p50_ms']:>9.1f}"
            f"{r['p95_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['errors']:>8}{hits:>12}"
        )
    ours = {r["clients"]: r for r in rows if r["server"] == OURS}
    uncached = {r["clients"]: r for r in rows if r["server"] == OURS_NO_CACHE}
    keyed = {r["clients"]: r for r in rows if r["server"] == OURS_KEYS}
    theirs = {r["clients"]: r for r in rows if r["server"] == MLFLOW}
    lines.append("")
    for c in sorted(set(ours) & set(theirs)):
        ratio = ours[c]["req_s"] / theirs[c]["req_s"] if theirs[c]["req_s"] else float("inf")
        line = f"throughput ours / mlflow at {c:>2} clients: {ratio:5.1f}x"
        if c in uncached and theirs[c]["req_s"]:
            line += f" ({uncached[c]['req_s'] / theirs[c]['req_s']:.1f}x with no state cache)"
        lines.append(line)
    for c in sorted(set(ours) & set(keyed)):
        ratio = keyed[c]["req_s"] / ours[c]["req_s"] if ours[c]["req_s"] else float("nan")
        lines.append(f"throughput with API keys / --no-auth at {c:>2} clients: {ratio:5.3f}")
    if 8 in ours and 8 in theirs:
        p99, ratio = ours[8]["p99_ms"], ours[8]["req_s"] / max(theirs[8]["req_s"], 1e-9)
        lines.append(
            f"targets at 8 clients: p99 {p99:.1f} ms (< 20: {'met' if p99 < 20 else 'MISSED'}), "
            f"throughput {ratio:.1f}x mlflow (>= 5x: {'met' if ratio >= 5 else 'MISSED'})"
        )
    if reload:
        lines.append(
            f"reload under load ({RELOAD_CLIENTS} clients, v{reload['from_version']} -> "
            f"v{reload['to_version']}): {RELOAD_WINDOW:.0f} s after the alias move "
            f"p50 {reload['p50_ms']:.1f} / p95 {reload['p95_ms']:.1f} / "
            f"p99 {reload['p99_ms']:.1f} ms, {reload['req_s']:.0f} req/s, "
            f"errors {reload['errors_whole_run']} (whole run); first answer from the new "
            f"version {reload['seconds_to_new_version']:.2f} s after the move; "
            f"{reload['old_version_after_swap']} answers from the old version started after it"
        )
    for name, note in notes.items():
        lines.append(f"{name}: {note['command']} (ready in {note['startup_s']} s)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--home", type=Path, help="a RECSYS_HOME; its champion is served, or one is built there"
    )
    parser.add_argument("--epochs", type=int, default=5, help="epochs of the benchmark's model")
    parser.add_argument(
        "--seconds", type=float, default=15.0, help="measured seconds per server and level"
    )
    parser.add_argument(
        "--rounds", type=int, default=3,
        help="interleaved rounds the seconds of each server and level are split into",
    )  # fmt: skip
    parser.add_argument(
        "--clients", default="1,8,32", type=lambda s: [int(c) for c in s.split(",")]
    )
    parser.add_argument("--users", type=int, default=500, help="MovieLens users in the mix")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--poll-seconds", type=float, default=1.0, help="reload run's polling")
    parser.add_argument(
        "--loadgen", choices=("auto", "wrk", "python"), default="auto",
        help="load generator of the levels: wrk (C, light on the cores the servers share) when "
        "it is on PATH, else bench/loadgen.py (Python); the reload always uses bench/loadgen.py",
    )  # fmt: skip
    parser.add_argument("--no-reload", action="store_true", help="skip the reload measurement")
    parser.add_argument(
        "--no-uncached", action="store_true",
        help=f"skip the levels of {OURS_NO_CACHE!r} (every answer runs the model)",
    )  # fmt: skip
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "recsys-bench")
    parser.add_argument("--no-mlflow", action="store_true", help="print only")
    args = parser.parse_args()
    if args.loadgen == "auto":
        args.loadgen = "wrk" if shutil.which("wrk") else "python"

    home = args.home or Path(tempfile.mkdtemp(prefix="recsys-bench-serve-"))
    settings = Settings.from_env({"RECSYS_HOME": str(home)})
    os.environ.update(child_env(settings))  # log_benchmark logs into the same home
    from recsys.registry.client import Registry

    if Registry(settings).alias(CHAMPION) is None:
        t0 = time.perf_counter()
        build_champion(settings, args.epochs, args.cache)
        print(f"setup: champion trained in {home} in {time.perf_counter() - t0:.0f} s", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))  # so the servers stop too
    with ExitStack() as stack:
        rows, notes = run_levels(args, settings, work, stack)
        reload = {} if args.no_reload else run_reload(args, settings, work, stack)
    lines = report(rows, reload, notes)
    print(
        f"\nrecsys serving benchmark: {os.cpu_count()} cores, {args.seconds:g} s per level "
        f"({args.rounds} interleaved rounds), "
        f"{args.users} MovieLens-100K users, k={K}, load generator {args.loadgen}"
    )
    print("\n".join(lines))
    if not args.no_mlflow:
        metrics = {
            f"{SHORT[r['server']]}.c{r['clients']}.{key}": r[key]
            for r in rows
            for key in ("req_s", "p50_ms", "p95_ms", "p99_ms", "errors")
        }
        metrics.update({f"reload.{k}": v for k, v in reload.items() if isinstance(v, float | int)})
        params = {
            "seconds": args.seconds,
            "rounds": args.rounds,
            "clients": args.clients,
            "users": args.users,
            "epochs": args.epochs,
            "home": str(home),
            "cpus": os.cpu_count(),
            "k": K,
            "loadgen": args.loadgen,
        }
        params.update({f"cmd.{SHORT[name]}": n["command"] for name, n in notes.items()})
        from common import log_benchmark

        tables = {"serve": rows, **({"reload": [reload]} if reload else {})}
        run_id = log_benchmark("serve", params, metrics, tables=tables)
        print(f"logged to MLflow run {run_id} (experiment bench-serve, {settings.tracking_uri})")


if __name__ == "__main__":
    main()
