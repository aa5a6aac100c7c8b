"""``recsys demo``: the whole loop on MovieLens-100K, driven by the real Airflow scheduler.

1. import MovieLens-100K into the event store (original timestamps replayed as ingestion times);
2. start Airflow (api-server, scheduler, dag-processor; LocalExecutor on SQLite) under RECSYS_HOME;
3. ``airflow backfill create`` recsys_ingest over the first weeks;
4. unpause recsys_full_retrain: its weekly run trains the first champion;
5. unpause recsys_incremental_finetune and backfill a few more days: each run updates the features
   Asset, which triggers a fine-tune;
6. print the registry, start the API, ask it for recommendations;
7. a short simulated A/B test: the newest other version as ``candidate``, every user asks twice
   and simulated users click (10% of lists under champion, 20% under candidate: a drill of the
   readout, not a measurement of the models); ``recsys ab status`` reads it out. Stop everything.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from recsys.config import TRAINING_POOL, Settings
from recsys.data.lake import Interval
from recsys.local_airflow import (
    AirflowDB,
    Processes,
    airflow_env,
    backfill,
    backfill_args,
    bin_path,
    get_json,
    port_free,
    post_json,
    run_airflow,
    summarise_runs,
    wait_for,
)

log = logging.getLogger(__name__)

MOVIELENS_START = date(1997, 9, 20)
SYNTHETIC_START = date(2024, 1, 1)
DAGS = ("recsys_ingest", "recsys_full_retrain", "recsys_incremental_finetune")
MARKER = ".recsys-demo"
SLOW = 2  # the waits allow twice what an idle 2-core machine takes: a busy one must not fail


def _snapshot_hashes(settings: Settings, intervals: list[Any]) -> list[str]:
    from recsys.data.features import INTERACTIONS
    from recsys.data.lake import Lake, file_sha256

    lake = Lake(settings.lake_root)
    return [file_sha256(lake.snapshot(iv) / INTERACTIONS) for iv in intervals]


def _say(t0: float, msg: str) -> None:
    print(f"[{time.time() - t0:6.1f}s] {msg}", flush=True)


def _prepare_home(settings: Settings, reset: bool) -> None:
    home = settings.home
    if home.exists() and any(home.iterdir()):
        if not reset:
            raise ValueError(
                f"{home} already holds state; rerun with --reset to start the demo over"
            )
        if not (home / MARKER).exists():
            raise ValueError(f"{home} was not created by the demo; refusing to delete it")
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    (home / MARKER).write_text("created by `recsys demo`; `recsys demo --reset` may delete it\n")


@dataclass(frozen=True)
class Plan:
    """What the demo replays: MovieLens-100K (default) or a small synthetic stream (for tests)."""

    synthetic: bool = False
    weeks: int = 6  # backfilled before the first full retrain
    days: int = 3  # backfilled after it, one fine-tune trigger per run
    api_port: int = 8000
    airflow_port: int = 8080

    @property
    def start(self) -> date:
        return SYNTHETIC_START if self.synthetic else MOVIELENS_START


def run(settings: Settings, plan: Plan, reset: bool = False) -> None:
    t0 = time.time()
    for port in (plan.api_port, plan.airflow_port):
        if not port_free(port):
            raise ValueError(f"port {port} is in use; pick another with --port/--airflow-port")
    if plan.weeks < 1 or plan.days < 1:
        raise ValueError("--weeks and --days must be at least 1")
    _prepare_home(settings, reset)
    env = airflow_env(settings, plan.airflow_port)
    services = Processes(env, settings.home / "logs")
    try:
        _loop(settings, env, services, t0, plan)
    finally:
        services.stop()
        _say(t0, "stopped every process the demo started")


def _import_events(settings: Settings, env: dict[str, str], plan: Plan) -> str:
    """Load the demo's events through the same CLI a user would use; returns its summary."""
    if plan.synthetic:
        import pandas as pd

        from recsys.data import synthetic

        start = dt.datetime.combine(plan.start, dt.time())
        records = synthetic.generate(
            n_users=150, n_items=100, start=start, days=7 * plan.weeks + plan.days
        )
        path = settings.home / "downloads" / "synthetic.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(records).to_json(path, orient="records", lines=True)
        source = ["--file", str(path)]
    else:
        source = ["--movielens-100k"]
    done = subprocess.run(
        [bin_path("recsys"), "events", "import", *source],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"importing the demo's events failed: {done.stderr[-1000:]}")
    return done.stdout.strip().splitlines()[0]


def _loop(
    settings: Settings, env: dict[str, str], services: Processes, t0: float, plan: Plan
) -> None:
    from recsys.registry.listing import format_registry, registry_rows

    _say(t0, f"state folder: {settings.home}")
    _say(t0, _import_events(settings, env, plan))
    db = _start_airflow(env, services, t0, plan)
    _train_and_finetune(env, db, services, t0, plan)
    _replay_collected_days(settings, env, db, services, t0, plan)
    print("\nModel registry (MLflow):")
    print("\n".join(format_registry(registry_rows(settings))))
    key = _api_key(env, t0)
    _ask_the_api(services, plan, key)
    _ab_drill(settings, env, services, t0, plan, key)
    _print_uis(settings, t0, plan)


def _start_airflow(env: dict[str, str], services: Processes, t0: float, plan: Plan) -> AirflowDB:
    """Migrate the metadata DB, create the training pool, start api-server and dag-processor."""
    run_airflow(env, "db", "migrate")
    run_airflow(env, "dags", "reserialize")
    run_airflow(env, "pools", "set", TRAINING_POOL, "1", "one training or promotion at a time")
    _say(t0, "Airflow metadata DB ready; starting api-server and dag-processor")
    services.start(
        "api-server",
        bin_path("airflow"),
        "api-server",
        "--port",
        str(plan.airflow_port),
        "--host",
        "127.0.0.1",
        "--workers",
        "1",
    )
    services.start("dag-processor", bin_path("airflow"), "dag-processor")
    wait_for(
        "the Airflow api-server",
        lambda: get_json(f"http://127.0.0.1:{plan.airflow_port}/api/v2/monitor/health"),
        120,
        services,
    )
    return AirflowDB(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])


def _train_and_finetune(
    env: dict[str, str], db: AirflowDB, services: Processes, t0: float, plan: Plan
) -> None:
    """Backfill the first weeks, let the weekly retrain make a champion, then backfill the days
    whose features trigger fine-tunes."""
    run_airflow(env, "dags", "unpause", "recsys_ingest")
    first_end = plan.start + timedelta(days=7 * plan.weeks - 1)
    _say(t0, " ".join(("airflow", *backfill_args(plan.start, first_end, max_active_runs=2))))
    backfill(env, db, services, plan.start, first_end, max_active_runs=2, timeout=SLOW * 420)
    _say(t0, f"recsys_ingest: {summarise_runs(db, 'recsys_ingest')}")

    _say(t0, "unpausing recsys_full_retrain: the scheduler starts its weekly full retrain")
    run_airflow(env, "dags", "unpause", "recsys_full_retrain")
    wait_for(
        "the full retrain",
        lambda: db.runs("recsys_full_retrain") and db.idle(),
        SLOW * 400,
        services,
    )
    _say(t0, f"recsys_full_retrain: {summarise_runs(db, 'recsys_full_retrain')}")
    # Fine-tuning needs a champion to start from; until now it would only have skipped.
    run_airflow(env, "dags", "unpause", "recsys_incremental_finetune")

    second_start = first_end + timedelta(days=1)
    second_end = first_end + timedelta(days=plan.days)
    _say(
        t0,
        " ".join(("airflow", *backfill_args(second_start, second_end, max_active_runs=1)))
        + "  (each run updates the features Asset, which triggers a fine-tune; Asset events "
        "that arrive while one runs are merged into the next)",
    )
    backfill(env, db, services, second_start, second_end, max_active_runs=1, timeout=SLOW * 420)
    _say(t0, f"recsys_incremental_finetune: {summarise_runs(db, 'recsys_incremental_finetune')}")


def _replay_collected_days(
    settings: Settings,
    env: dict[str, str],
    db: AirflowDB,
    services: Processes,
    t0: float,
    plan: Plan,
) -> None:
    """Backfill two collected days again and check their features come out byte-identical."""
    replay = [
        Interval.parse(str(plan.start + timedelta(days=d)), str(plan.start + timedelta(days=d + 1)))
        for d in range(2)
    ]
    before = _snapshot_hashes(settings, replay)
    replay_args = backfill_args(plan.start, replay[-1].start.date(), 1, reprocess="completed")
    _say(t0, " ".join(("airflow", *replay_args)) + "  (already collected)")
    backfill(
        env,
        db,
        services,
        plan.start,
        replay[-1].start.date(),
        max_active_runs=1,
        timeout=SLOW * 300,
        reprocess="completed",
    )
    same = before == _snapshot_hashes(settings, replay)
    _say(t0, f"features of the re-run intervals byte-identical: {'yes' if same else 'NO'}")


def _api_key(env: dict[str, str], t0: float) -> str:
    """An API key for the demo's requests, made as a user makes one."""
    import json

    args = ["keys", "create", "--scopes", "events:write,recommendations:read", "--name", "demo"]
    done = subprocess.run([bin_path("recsys"), *args, "--json"], env=env, capture_output=True,
                          text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"creating the demo's API key failed: {done.stderr[-1000:]}")
    made = json.loads(done.stdout)
    _say(t0, f"recsys {' '.join(args)}  -> key {made['id']}; requests send "
             "Authorization: Bearer <key> (recsys keys list, recsys keys revoke ID)")  # fmt: skip
    return made["key"]


def _ask_the_api(services: Processes, plan: Plan, key: str) -> None:
    """Start ``recsys serve``, ask for a list, post a click on its first item and ask again."""
    services.start(
        "recsys-serve", bin_path("recsys"), "serve", "--port", str(plan.api_port),
        "--poll-seconds", "5",
    )  # fmt: skip
    api = f"http://127.0.0.1:{plan.api_port}"
    wait_for(
        "the recommendation API",
        lambda: get_json(f"{api}/health")["model_version"],
        120,
        services,
    )
    user = "u1" if plan.synthetic else "1"
    recs = get_json(f"{api}/recommendations/{user}?k=10", key=key)
    print(f"\nGET {api}/recommendations/{user}?k=10  (model version {recs['model_version']})")
    print("  " + ", ".join(r["item_id"] for r in recs["items"]))
    clicked = recs["items"][0]["item_id"]
    click = {"user_id": user, "item_id": clicked, "event_type": "click"}
    post_json(f"{api}/events", click, key=key)
    recs = get_json(f"{api}/recommendations/{user}?k=10", key=key)
    print(f"POST {api}/events  (user {user} clicks item {clicked}), then the same GET:")
    print("  " + ", ".join(r["item_id"] for r in recs["items"]))


DRILL_CTR = {"champion": 0.10, "candidate": 0.20}  # simulated users' click-through, per arm


def _ab_drill(
    settings: Settings, env: dict[str, str], services: Processes, t0: float, plan: Plan, key: str
) -> None:
    """Start an A/B test, send every user twice through the API with simulated clicks, and print
    ``recsys ab status``; the test stays running (``recsys ab conclude`` acts on it)."""
    import random

    from recsys.config import CHAMPION
    from recsys.registry.client import Registry
    from recsys.release import ab

    reg = Registry(settings)
    champion = str(reg.alias(CHAMPION).version)
    others = [str(v.version) for v in reg.versions() if str(v.version) != champion]
    if not others:
        _say(t0, "A/B drill skipped: only one model version")
        return
    candidate = others[-1]
    _say(t0, f"recsys ab start {candidate} --reason 'demo drill'  (a simulated A/B test)")
    ab.start(settings, candidate, "demo drill: simulated users, not a measurement")
    api = f"http://127.0.0.1:{plan.api_port}"
    wait_for("the candidate", lambda: get_json(f"{api}/health")["candidate_version"], 60, services)
    users = sorted(_demo_users(settings))
    rng = random.Random(0)
    for _ in range(2):
        for user in users:
            recs = get_json(f"{api}/recommendations/{user}?k=10", key=key)
            if recs["items"] and rng.random() < DRILL_CTR.get(recs["arm"], 0.0):
                click = {"user_id": user, "item_id": recs["items"][0]["item_id"],
                         "event_type": "click", "request_id": recs["request_id"]}  # fmt: skip
                post_json(f"{api}/events", click, key=key)
    wait_for("the impressions", lambda: get_json(f"{api}/health")["impressions"]["queued"] == 0,
             30, services, every=0.5)  # fmt: skip
    time.sleep(1.5)  # the writer's last batch: it commits about once a second
    done = subprocess.run([bin_path("recsys"), "ab", "status"], env=env, capture_output=True,
                          text=True, check=False)  # fmt: skip
    print(f"\nrecsys ab status  ({2 * len(users)} requests from {len(users)} users):")
    print("  " + "\n  ".join((done.stdout or done.stderr).strip().splitlines()))


def _demo_users(settings: Settings) -> list[str]:
    """Every user id in the event store."""
    import sqlalchemy as sa

    from recsys import schema as S
    from recsys.data.events import EventStore, events_table

    store = EventStore(settings.event_store_url)
    try:
        with store.engine.connect() as conn:
            query = sa.select(events_table.c[S.USER_ID]).distinct()
            return [row[0] for row in conn.execute(query) if row[0] is not None]
    finally:
        store.engine.dispose()


def _print_uis(settings: Settings, t0: float, plan: Plan) -> None:
    bin_dir = Path(sys.executable).parent
    home = settings.home
    api = f"http://127.0.0.1:{plan.api_port}"
    print(f"\n[{time.time() - t0:.0f}s] the loop ran end to end. Look at it with:")
    print(
        f"  Airflow UI: AIRFLOW_HOME={home / 'airflow'} "
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True "
        f"{bin_dir / 'airflow'} api-server --port 8080   -> http://127.0.0.1:8080"
    )
    print(
        f"  MLflow UI:  {bin_dir / 'mlflow'} ui --backend-store-uri {settings.tracking_uri} "
        "--port 5000   -> http://127.0.0.1:5000"
    )
    print(
        f"  API:        RECSYS_HOME={home} {bin_dir / 'recsys'} serve --port {plan.api_port}   -> "
        f"{api}/docs"
    )
