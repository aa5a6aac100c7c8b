"""Reliability: one test per fault, each asserting that nothing was lost, nothing half-done became
visible, and the retry (or the repair) ends where a clean run ends. Outcomes: docs/reliability.md.

Every test works on a copy of one small prepared home (events, a lake of two validated days, an
MLflow registry holding two tiny models and no champion), so the file stays fast.
"""

import dataclasses
import datetime as dt
import errno
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from recsys import cli
from recsys import schema as S
from recsys.config import CHAMPION, ModelConfig, PipelineConfig, Settings, TrainConfig
from recsys.data import collect, events, features, quarantine, synthetic, validate
from recsys.data.lake import EVENTS, CorruptPartitionError, Interval, Lake, file_sha256, read_json
from recsys.registry import aliases
from recsys.registry.alias_log import AliasLog
from recsys.registry.client import Registry
from recsys.release import pipeline, promote

pytestmark = pytest.mark.slow

START = dt.datetime(2024, 1, 1)
MODEL = ModelConfig(max_len=20, d_model=16, n_layers=1, n_heads=1, dropout=0.1)


def _saved_epoch(path: Path) -> int:
    """The last epoch a training state file holds; 0 while there is none (or it is mid-write)."""
    import torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except (FileNotFoundError, RuntimeError, EOFError, KeyError):
        return 0


def tiny(epochs: int) -> PipelineConfig:
    train = TrainConfig(epochs=epochs, batch_size=64, lr=5e-3, eval_every=1, patience=100)
    return PipelineConfig(model=MODEL, train=train)


KILLED = tiny(6)  # the training that is killed, then retried (the child imports it)


def _day(d: int) -> Interval:
    return Interval(START + dt.timedelta(days=d), START + dt.timedelta(days=d + 1))


def _ingest(settings: Settings, d: int) -> dict:
    collect.run(settings, _day(d))
    assert validate.run(settings, _day(d))["success"]
    return features.run(settings, _day(d))


def _release(settings: Settings, cfg: PipelineConfig) -> str:
    trained = pipeline.train(settings, "full", cfg)
    pipeline.evaluate(settings, trained["run_id"], cfg)
    return pipeline.register(settings, trained["run_id"])["version"]


def _free_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """Events of 3 days in the store, days 0 and 1 ingested, versions 1 and 2 registered."""
    home = tmp_path_factory.mktemp("faults") / "recsys"
    settings = Settings.from_env({"RECSYS_HOME": str(home)})
    store = events.EventStore(settings.event_store_url)
    store.append(events.prepare_rows(synthetic.generate(n_users=60, n_items=30, days=3)))
    for d in (0, 1):
        _ingest(settings, d)
    assert [_release(settings, tiny(epochs)) for epochs in (1, 2)] == ["1", "2"]
    return home


@pytest.fixture
def home(base, tmp_path) -> Settings:
    """A private copy of the prepared home (its runs' artifacts stay readable where they are)."""
    shutil.copytree(base, tmp_path / "recsys")
    return Settings.from_env({"RECSYS_HOME": str(tmp_path / "recsys")})


# -- 1. training killed mid-epoch ----------------------------------------------------------------
CHILD = textwrap.dedent(
    """
    import sys, time
    import torch
    import recsys.training.loop as T
    from recsys.release import pipeline
    from recsys.config import Settings
    from tests.integration.test_faults import KILLED

    torch.set_num_threads(1)
    slow = T._run_epoch
    def run_epoch(*args, **kwargs):  # slow epochs, so the kill lands mid-run
        time.sleep(0.5)
        return slow(*args, **kwargs)
    T._run_epoch = run_epoch
    pipeline.train(Settings.from_env({"RECSYS_HOME": sys.argv[1]}), "full", KILLED)
    """
)


def test_killed_training_resumes_and_registers_nothing_until_the_retry(home):
    reg = Registry(home)
    alias_log = AliasLog(home.event_store_url)
    aliases.move_alias(reg, alias_log, CHAMPION, "1", "test", "the champion before the fault")
    fs = features.load(home)
    state = pipeline.training_state_path(home, "full", fs.manifest["version"], None)
    runs_before = {r.info.run_id for r in reg.client.search_runs([reg.experiment_id()])}

    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(home.home)], env=env)
    deadline = time.monotonic() + 120
    while _saved_epoch(state) < 2 and time.monotonic() < deadline:
        assert child.poll() is None, "the training ended before it could be killed"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    killed_after = _saved_epoch(state)
    assert 2 <= killed_after < KILLED.train.epochs, "the kill must land mid-run"

    # The killed attempt left its state file and its run, with the curve so far (a SIGKILL gives
    # no time to end it: still RUNNING), and no version; the champion is the same.
    (killed,) = [r for r in reg.client.search_runs([reg.experiment_id()])
                 if r.info.run_id not in runs_before]  # fmt: skip
    assert killed.info.status == "RUNNING"
    live = [row["step"] for row in reg.metric_history(killed.info.run_id, ["train.loss"])]
    assert live[:killed_after] == list(range(1, killed_after + 1))
    assert [str(v.version) for v in reg.versions()] == ["1", "2"]
    assert str(reg.alias(CHAMPION).version) == "1"

    trained = pipeline.train(home, "full", KILLED)  # the retry: the same call again
    assert trained["resumed_from_epoch"] == killed_after
    assert trained["run_id"] != killed.info.run_id
    assert reg.run(killed.info.run_id).info.status == "KILLED"  # ended by the retry
    run = reg.run(trained["run_id"])
    assert run.data.params["train.resumed_from_epoch"] == str(killed_after)
    steps = [row["step"] for row in reg.metric_history(trained["run_id"], ["train.loss"])]
    assert steps == list(range(1, KILLED.train.epochs + 1))  # the history continues
    assert not state.exists()  # logged: the state file is done with

    pipeline.evaluate(home, trained["run_id"], KILLED)
    version = pipeline.register(home, trained["run_id"])["version"]
    assert version == "3" and str(reg.alias(CHAMPION).version) == "1"  # registered, not live
    result = promote.run(home, version, KILLED, force="fault test: the retried training")
    assert result["promoted"] and str(reg.alias(CHAMPION).version) == "3"
    moves = [(m.from_version, m.to_version) for m in alias_log.history(CHAMPION)]
    assert moves == [(None, "1"), ("1", "3")]


def test_the_run_is_live_while_training_and_ends_failed_when_training_fails(home, monkeypatch):
    import recsys.training.loop as T

    slow = T._run_epoch
    monkeypatch.setattr(T, "_run_epoch", lambda *a, **k: (time.sleep(0.5), slow(*a, **k))[1])
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "true")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
    reg = Registry(home)
    seen = []

    def watch(report):  # what the MLflow UI would show at that moment
        (run,) = reg.client.search_runs([reg.experiment_id()], "attributes.status = 'RUNNING'")
        steps = [row["step"] for row in reg.metric_history(run.info.run_id, ["train.loss"])]
        checks = [row["step"] for row in reg.metric_history(run.info.run_id, ["train.ndcg_at_10"])]
        seen.append((report.epoch, steps, checks))

    trained = pipeline.train(home, "full", tiny(4), progress=watch)
    assert seen == [(e, list(range(1, e + 1)), list(range(1, e + 1))) for e in range(1, 5)]
    run = reg.run(trained["run_id"])
    assert run.info.status == "RUNNING"  # evaluate and register still log to it
    assert any(k.startswith("system/cpu_utilization") for k in run.data.metrics), run.data.metrics
    with monkeypatch.context() as patch:  # the evaluation fails once: the run says so...
        patch.setattr(pipeline, "split_of", lambda *a: (_ for _ in ()).throw(OSError("lake")))
        with pytest.raises(OSError, match="lake"):
            pipeline.evaluate(home, trained["run_id"], tiny(4))
    assert reg.run(trained["run_id"]).info.status == "FAILED"
    pipeline.evaluate(home, trained["run_id"], tiny(4))  # ...its retry logs to it again
    registered = pipeline.register(home, trained["run_id"])
    run = reg.run(trained["run_id"])
    assert run.info.status == "FINISHED"
    # The data it trained and was tested on, as MLflow datasets; its test metrics on its model.
    fs = features.load(home)
    interval, digest = fs.manifest["interval"]["id"], fs.manifest["version"][:16]
    inputs = {
        (i.dataset.name, i.dataset.digest): {t.key: t.value for t in i.tags}["mlflow.data.context"]
        for i in run.inputs.dataset_inputs
    }
    assert inputs == {
        (f"features-{interval}", digest): "training",
        (f"features-{interval}-test", digest): "evaluation",
    }
    model = reg.client.get_logged_model(reg.version(registered["version"]).tags["recsys.model_id"])
    on_model = {m.key: m for m in model.metrics}
    assert on_model["test.ndcg_at_10"].value == pytest.approx(run.data.metrics["test.ndcg_at_10"])
    assert on_model["test.ndcg_at_10"].dataset_name == f"features-{interval}-test"

    def fail_at_2(report):
        if report.epoch == 2:
            raise RuntimeError("out of memory, say")

    versions = len(reg.versions())
    with pytest.raises(RuntimeError, match="out of memory"):
        pipeline.train(home, "full", tiny(5), progress=fail_at_2)
    (failed,) = reg.client.search_runs([reg.experiment_id()], "attributes.status = 'FAILED'")
    assert [row["step"] for row in reg.metric_history(failed.info.run_id, ["train.loss"])] == [1, 2]
    assert len(reg.versions()) == versions  # nothing registered


def test_a_fresh_training_says_it_did_not_resume(home):
    trained = pipeline.train(home, "full", tiny(1))
    assert trained["resumed_from_epoch"] == 0
    params = Registry(home).run(trained["run_id"]).data.params
    assert params["train.resumed_from_epoch"] == "0"


# -- 2. registry unreachable during promotion ----------------------------------------------------
def test_registry_down_during_promotion_fails_fast_then_promotes_once(home, monkeypatch):
    # MLflow retries an unreachable server for minutes by default: bound it (docs/reliability.md).
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    port = _free_port()
    down = dataclasses.replace(home, tracking_uri=f"http://127.0.0.1:{port}")
    alias_log = AliasLog(home.event_store_url)
    started = time.monotonic()
    with pytest.raises(MlflowException, match=f"127.0.0.1:{port}.*(refused|Max retries)"):
        promote.run(down, "1", tiny(1))
    assert time.monotonic() - started < 30  # no hang
    assert alias_log.history(CHAMPION) == []  # nothing recorded, nothing pending
    assert Registry(home).alias(CHAMPION) is None

    back = promote.run(home, "1", tiny(1))  # the registry is back
    assert back["promoted"], back["reason"]
    again = promote.run(home, "1", tiny(1))  # e.g. the Airflow task retried
    assert not again["promoted"] and again["reason"] == "already champion"
    (move,) = alias_log.history(CHAMPION)
    assert (move.from_version, move.to_version, move.pending) == (None, "1", False)
    assert str(Registry(home).alias(CHAMPION).version) == "1"


# -- 3. event store unreachable while collecting -------------------------------------------------
def test_event_store_down_while_collecting_writes_nothing_then_collects_once(home, tmp_path):
    interval = _day(2)
    url = f"postgresql+psycopg://recsys:s3cret@127.0.0.1:{_free_port()}/events"
    down = dataclasses.replace(home, event_store_url=url)
    started = time.monotonic()
    with pytest.raises(collect.EventStoreUnavailable, match=f"collecting {interval.id}") as err:
        collect.run(down, interval)
    assert time.monotonic() - started < 30
    assert "s3cret" not in str(err.value) and "127.0.0.1" in str(err.value)
    lake = Lake(home.lake_root)
    assert lake.partitions("staging") == [] and not lake.partition("staging", interval).exists()

    first = collect.run(home, interval)  # the store is back
    clean = collect.run(dataclasses.replace(home, lake_root=tmp_path / "clean"), interval)
    assert first["rows"] == clean["rows"] > 0 and first["sha256"] == clean["sha256"]
    assert collect.run(home, interval) == first  # a rerun changes nothing
    assert lake.partitions("staging") == [interval]
    rows = lake.read_events("staging", interval)
    stored = events.EventStore(home.event_store_url).read_interval(interval.start, interval.end)
    assert rows[S.EVENT_ID].is_unique and set(rows[S.EVENT_ID]) == set(stored[S.EVENT_ID])


# -- 4. disk write failure while writing a partition ---------------------------------------------
def _disk_full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device (simulated)")


def _fail(monkeypatch, failure: str) -> None:
    """Make the next write of ``failure`` hit a full disk."""
    import json

    real_to_parquet, real_replace, real_dump = pd.DataFrame.to_parquet, os.replace, json.dump

    def half_then_full(frame, path, *args, **kwargs):  # a partial file, then the error
        real_to_parquet(frame, path, *args, **kwargs)
        with open(path, "r+b") as fh:
            fh.truncate(os.path.getsize(path) // 2)
        _disk_full()

    def replace(src, dst):
        if Path(dst).name == EVENTS:
            _disk_full()
        return real_replace(src, dst)

    def dump(obj, fh, *args, **kwargs):
        if isinstance(obj, dict) and "sha256" in obj:  # a partition manifest
            fh.write("{")
            _disk_full()
        return real_dump(obj, fh, *args, **kwargs)

    patches = {"parquet": (pd.DataFrame, "to_parquet", half_then_full),
               "rename": (os, "replace", replace), "manifest": (json, "dump", dump)}  # fmt: skip
    monkeypatch.setattr(*patches[failure])


STAGES = {"collect": collect, "validate": validate}


@pytest.mark.parametrize(
    "stage,failure",
    [
        ("collect", "parquet"),
        ("collect", "rename"),
        ("collect", "manifest"),
        ("validate", "parquet"),
    ],
)
def test_disk_full_while_writing_a_partition_leaves_nothing_visible(
    home, tmp_path, monkeypatch, stage, failure
):
    interval, zone = _day(2), {"collect": "staging", "validate": "raw"}[stage]
    clean = dataclasses.replace(home, lake_root=tmp_path / "clean")
    collect.run(clean, interval)
    reference = validate.run(clean, interval) if stage == "validate" else None
    if stage == "validate":
        collect.run(home, interval)
    with monkeypatch.context() as patched:
        _fail(patched, failure)
        with pytest.raises(OSError, match="No space left"):
            STAGES[stage].run(home, interval)
    lake = Lake(home.lake_root)
    directory = lake.partition(zone, interval)
    assert interval not in lake.partitions(zone) and lake.manifest(zone, interval) is None
    assert not [p.name for p in directory.parent.rglob("*.tmp")]  # no temporary files left
    with pytest.raises(FileNotFoundError, match="no complete"):
        lake.read_events(zone, interval)

    result = STAGES[stage].run(home, interval)
    expected = reference or collect.run(clean, interval)
    assert result["sha256"] == expected["sha256"] and result["rows"] == expected["rows"]
    assert lake.partitions(zone)[-1] == interval


# -- 5. a corrupt Parquet file in the lake -------------------------------------------------------
def test_corrupt_partition_is_quarantined_reported_and_repaired_by_recollecting(
    home, caplog, capsys
):
    lake = Lake(home.lake_root)
    day = _day(0)
    published = lake.manifest("raw", day)["sha256"]
    latest_before = read_json(lake.latest_path)
    day_snapshot = read_json(lake.snapshot(day) / features.MANIFEST)["version"]
    path = lake.partition("raw", day) / EVENTS
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    damaged = file_sha256(path)

    with caplog.at_level(logging.ERROR, logger="recsys.data.quarantine"):
        with pytest.raises(CorruptPartitionError, match="does not match its manifest") as err:
            features.run(home, _day(1))
    message = str(err.value)
    assert day.id in message and published in message and damaged in message
    assert "not built" in message and f"recsys quarantine release {day.id}" in message
    line = next(r.getMessage() for r in caplog.records if "QUARANTINED" in r.getMessage())
    assert day.id in line and published in line and damaged in line
    assert read_json(lake.latest_path) == latest_before  # nothing built on the damaged bytes

    assert lake.partitions("raw") == [_day(1)] and lake.partitions("quarantine") == [day]
    report = read_json(lake.partition("quarantine", day) / quarantine.CORRUPTION)
    assert (report["manifest_sha256"], report["actual_sha256"]) == (published, damaged)
    (entry,) = quarantine.list_quarantined(home)
    assert entry["interval"] == day.id and "corrupt" in entry["summary"]
    assert entry["report"].endswith(quarantine.CORRUPTION)
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as env:
        for key, value in home.as_env().items():
            env.setenv(key, value)
        cli.main(["quarantine", "list"])
    printed = capsys.readouterr().out
    assert day.id in printed and damaged in printed and quarantine.CORRUPTION in printed

    # Re-collecting the interval from the event store repairs it (the ingest, run again).
    again = _ingest(home, 0)
    assert lake.manifest("raw", day)["sha256"] == published == file_sha256(path)
    assert quarantine.list_quarantined(home) == []
    kept = list((lake.root / "quarantine" / "released").iterdir())
    assert len(kept) == 1 and (kept[0] / quarantine.CORRUPTION).exists()  # the damaged copy
    assert again["version"] == day_snapshot  # byte-identical to the snapshot before the damage
    rebuilt = features.run(home, _day(1))
    assert rebuilt["version"] == latest_before["version"]
    assert lake.partitions("raw") == [_day(0), _day(1)]


# -- 6. two promotions racing --------------------------------------------------------------------
def test_two_racing_promotions_move_the_champion_once(home, store_url, monkeypatch):
    home = dataclasses.replace(home, event_store_url=store_url)  # the alias log on each backend
    both_decided = threading.Barrier(2, timeout=120)
    real_move = promote._move_champion

    def move_after_both_decided(*args, **kwargs):  # both judged against "no champion"
        both_decided.wait()
        return real_move(*args, **kwargs)

    monkeypatch.setattr(promote, "_move_champion", move_after_both_decided)
    results: dict[str, dict] = {}
    errors: list[BaseException] = []

    def run(version: str) -> None:
        try:
            results[version] = promote.run(home, version, tiny(1))
        except Exception as err:  # reported by the assertion below
            errors.append(err)
            both_decided.abort()

    threads = [threading.Thread(target=run, args=(v,)) for v in ("1", "2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    winners = [v for v, r in results.items() if r["promoted"]]
    assert len(winners) == 1, results
    (loser,) = {"1", "2"} - set(winners)
    assert "conflict" in results[loser]["reason"]
    assert results[loser]["champion_before"] is None  # it decided against the same champion
    moves = AliasLog(home.event_store_url).history(CHAMPION)
    assert [(m.from_version, m.to_version, m.pending) for m in moves] == [(None, winners[0], False)]
    reg = Registry(home)
    assert str(reg.alias(CHAMPION).version) == winners[0]
    assert reg.version(loser).tags["promotion.decision"] == "rejected"
