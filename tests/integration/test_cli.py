"""The `recsys` command line, end to end on a small synthetic event file."""

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from recsys.data import synthetic
from recsys.data.lake import Interval, Lake, read_json
from tests.helpers.registry import tiny_versions

pytestmark = pytest.mark.slow

RECSYS = str(Path(sys.executable).parent / "recsys")


@pytest.fixture
def settings(backend_settings):
    """The event store on SQLite, then PostgreSQL (the production backend)."""
    return backend_settings


def _recsys(settings, *args, check=True, env=None):
    env = {
        "RECSYS_HOME": str(settings.home),
        "PATH": "/usr/bin:/bin",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "GIT_PYTHON_REFRESH": "quiet",
        **(env or {}),
    }
    done = subprocess.run([RECSYS, *args], env=env, capture_output=True, text=True)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.parametrize(
    "command",
    [
        ["events", "import"],
        ["ingest"],
        ["train"],
        ["evaluate"],
        ["promote"],
        ["registry"],
        ["registry", "history"],
        ["registry", "live-at"],
        ["rollback"],
        ["serve"],
        ["demo"],
    ],
)
def test_every_command_has_help(command):
    done = subprocess.run([RECSYS, *command, "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--json" in done.stdout


def test_import_ingest_train_promote(settings, tmp_path):
    records = synthetic.generate(n_users=60, n_items=40, days=3)
    path = tmp_path / "events.jsonl"
    pd.DataFrame(records).drop(columns=["ingested_at"]).to_json(path, orient="records", lines=True)

    args = ("events", "import", "--file", str(path), "--json")
    imported = json.loads(_recsys(settings, *args).stdout)
    assert imported["inserted"] == len(records) and imported["duplicates"] == 0
    again = json.loads(_recsys(settings, *args).stdout)
    assert again["inserted"] == 0 and again["total_in_store"] == len(records)

    for day in ("01", "02"):
        out = _recsys(
            settings,
            "ingest",
            "--start",
            f"2024-01-{day}",
            "--end",
            f"2024-01-{int(day) + 1:02d}",
            "--json",
        ).stdout
        assert json.loads(out)["validation"]["success"]

    done = _recsys(settings, "train", "--mode", "full", "--epochs", "5", "--json")
    trained = json.loads(done.stdout)  # stdout: the result alone; the progress goes to stderr
    progress = [line for line in done.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in progress] == [f"{e}/5" for e in range(1, 6)]
    assert "loss" in progress[0] and "valid NDCG@10" in progress[-1]
    assert trained["version"] == "1"
    assert trained["test.ndcg_at_10"] > trained["popularity.ndcg_at_10"]

    promoted = json.loads(_recsys(settings, "promote", "--json").stdout)
    assert promoted["promoted"] and promoted["champion"] == "1"
    again = json.loads(_recsys(settings, "promote", "--json").stdout)
    assert not again["promoted"] and again["reason"] == "already champion"

    (row,) = json.loads(_recsys(settings, "registry", "--json").stdout)
    assert set(row["aliases"]) == {"champion", "challenger"} and row["decision"] == "promoted"
    # A number, not text (the version's tag holds it to 4 places).
    assert row["ndcg_at_10"] == pytest.approx(trained["test.ndcg_at_10"], abs=5e-5)
    assert isinstance(row["popularity_ndcg_at_10"], float)
    assert row["data_end"]  # its data watermark...
    table = _recsys(settings, "registry").stdout  # ...against the newest validated data's
    assert "freshness: live model v1 trained to data of " in table
    assert "0.0 h behind (objective 48 h: ok)" in table
    (move,) = json.loads(_recsys(settings, "registry", "history", "--json").stdout)
    assert (move["kind"], move["from_version"], move["to_version"]) == ("promote", None, "1")
    assert move["actor"].startswith("cli:") and "no champion" in move["reason"]

    lineage = json.loads(_recsys(settings, "lineage", "champion", "--json").stdout)
    lake = Lake(settings.lake_root)
    assert lineage["version"] == "1" and lineage["mode"] == "full"
    assert [p["interval"] for p in lineage["partitions"]] == [
        iv.id for iv in lake.partitions("raw")
    ]
    for part in lineage["partitions"]:
        manifest = lake.manifest("raw", Interval.from_id(part["interval"]))
        assert part["sha256"] == manifest["sha256"] and part["validation"]["success"]
    assert lineage["features"]["version"] == read_json(lake.latest_path)["version"]
    text = _recsys(settings, "lineage", "1").stdout
    assert "built from 2 validated raw partitions" in text

    skipped = _recsys(settings, "train", "--mode", "incremental").stdout
    assert "no data ingested after the champion's" in skipped


def test_bad_input_gets_a_clear_error(settings, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item\n1,2\n")
    done = _recsys(settings, "events", "import", "--file", str(bad), check=False)
    assert done.returncode != 0 and "missing required column" in done.stderr
    done = _recsys(settings, "ingest", "--start", "2024-01-02", "--end", "2024-01-01", check=False)
    assert done.returncode != 0 and "must be after" in done.stderr
    done = _recsys(settings, "train", check=False)
    assert done.returncode != 0 and "no features" in done.stderr


def test_import_rejects_bad_rows_and_refuses_unreadable_files(settings, tmp_path):
    path = tmp_path / "events.csv"
    path.write_bytes(
        b"user_id,item_id,event_time\nu1,i1,2024-01-01T00:00:00\n\n"
        b"u2,i2,2200-01-01T00:00:00\ncaf\xe9,i3,2024-01-01\nu4,i4\n"
    )
    done = _recsys(settings, "events", "import", "--file", str(path), "--json")
    result = json.loads(done.stdout)
    counts = [result[k] for k in ("read", "inserted", "duplicates", "rejected", "total_in_store")]
    assert counts == [4, 1, 0, 3, 1]
    assert result["rejects"] == f"{path}.rejects.jsonl"
    lines = [json.loads(line) for line in Path(result["rejects"]).read_text().splitlines()]
    assert [(r["line"], r["reason"].split(":")[0]) for r in lines] == [
        (4, "event_time"),
        (5, "not valid UTF-8"),
        (6, "2 field(s) where the header has 3"),
    ]
    rejects = tmp_path / "elsewhere" / "r.jsonl"
    text = _recsys(settings, "events", "import", "--file", str(path), "--rejects", str(rejects))
    assert "(4 read, 1 already present, 3 rejected)" in text.stdout and str(rejects) in text.stdout
    assert len(rejects.read_text().splitlines()) == 3

    bad = tmp_path / "events.parquet"
    bad.write_bytes(b"PAR1 not really")
    done = _recsys(settings, "events", "import", "--file", str(bad), check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "not a readable Parquet file" in done.stderr


def _in_process(settings, *args, check=True):
    """``recsys ARGS`` through ``cli.main`` in this process: what ``_recsys`` checks, without
    paying a fresh interpreter's imports (torch, mlflow) for each of many short commands."""
    import contextlib
    import io
    import types

    from recsys import cli

    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli.main(list(args))
        except SystemExit as done:  # argparse errors (2) and the CLI's own (a message: 1)
            if isinstance(done.code, str):
                err.write(done.code + "\n")
            code = done.code if isinstance(done.code, int) else 1
    if check:
        assert code == 0, err.getvalue()[-3000:]
    return types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def test_alias_history_live_at_and_rollback(settings, tmp_path):
    from recsys.registry import aliases
    from recsys.registry.alias_log import AliasLog

    reg = tiny_versions(settings, tmp_path, 3)
    reg.set_alias("champion", "1")  # by hand, before the alias log existed
    # One real process; the many short commands after it run in this one.
    (found,) = json.loads(_recsys(settings, "registry", "history", "--json").stdout)
    assert (found["kind"], found["from_version"], found["to_version"]) == ("external", None, "1")

    alias_log = AliasLog(settings.event_store_url)
    actor = "airflow:recsys_full_retrain/manual__2026-11-01"
    second = aliases.move_alias(reg, alias_log, "champion", "2", actor, "beats the champion")
    third = aliases.move_alias(reg, alias_log, "champion", "3", actor, "beats the champion")
    text = _in_process(settings, "registry", "history").stdout
    assert text.count("promote") == 2 and actor in text and "(none) -> v1" in text

    def live_at(when: dt.datetime) -> str | None:
        out = _in_process(settings, "registry", "live-at", when.isoformat(), "--json").stdout
        return json.loads(out)["version"]

    tiny = dt.timedelta(microseconds=1)
    assert live_at(dt.datetime.fromisoformat(found["moved_at"]) - tiny) is None
    assert live_at(second.moved_at) == "2"
    assert live_at(third.moved_at - tiny) == "2"
    assert live_at(third.moved_at.replace(tzinfo=None)) == "3"  # naive = UTC
    assert live_at(third.moved_at.astimezone(dt.timezone(dt.timedelta(hours=-5)))) == "3"
    text = _in_process(settings, "registry", "live-at", second.moved_at.isoformat()).stdout
    assert "champion at" in text and "version 2" in text and "beats the champion" in text

    back = _in_process(settings, "rollback", "--reason", "v3 is broken", "--json")
    back = json.loads(back.stdout)
    assert (back["kind"], back["from_version"], back["to_version"]) == ("rollback", "3", "2")
    assert back["reason"] == "v3 is broken" and back["actor"].startswith("cli:")
    assert str(reg.alias("champion").version) == "2"  # what serving polls
    text = _in_process(settings, "rollback", "--reason", "v2 is broken too").stdout
    assert "rolled back from version 2 to 1" in text
    rows = json.loads(_in_process(settings, "registry", "--json").stdout)
    assert {str(r["version"]): r["aliases"] for r in rows} == {"1": ["champion"], "2": [], "3": []}

    done = _in_process(settings, "rollback", "--reason", "and v1?", check=False)
    assert done.returncode != 0 and "nothing to roll back to" in done.stderr
    assert str(reg.alias("champion").version) == "1"
    history = json.loads(_in_process(settings, "registry", "history", "--json").stdout)
    assert [(m["kind"], m["to_version"]) for m in history] == [
        ("external", "1"),
        ("promote", "2"),
        ("promote", "3"),
        ("rollback", "2"),
        ("rollback", "1"),
    ]
    done = _in_process(settings, "registry", "live-at", "yesterday", check=False)
    assert done.returncode != 0 and "bad time 'yesterday'" in done.stderr
    done = _in_process(settings, "rollback", check=False)
    assert done.returncode != 0 and "--reason" in done.stderr


def test_ingest_and_train_with_the_lake_in_s3(settings, tmp_path, s3_lake, s3_env):
    """RECSYS_LAKE_ROOT=s3://...: every command, each its own process, reads and writes the lake
    through the S3 API (moto's server here), and nothing lands in the local lake folder."""
    env = {**s3_env, "RECSYS_LAKE_ROOT": s3_lake}
    records = synthetic.generate(n_users=40, n_items=30, days=2)
    path = tmp_path / "events.jsonl"
    pd.DataFrame(records).drop(columns=["ingested_at"]).to_json(path, orient="records", lines=True)
    _recsys(settings, "events", "import", "--file", str(path), env=env)
    for start, end in (("2024-01-01", "2024-01-02"), ("2024-01-02", "2024-01-03")):
        done = _recsys(settings, "ingest", "--start", start, "--end", end, "--json", env=env)
        result = json.loads(done.stdout)
        assert result["validation"]["success"] and result["validation"]["path"].startswith(s3_lake)
    trained = json.loads(
        _recsys(settings, "train", "--mode", "full", "--epochs", "2", "--json", env=env).stdout
    )
    assert trained["version"] == "1"

    lake = Lake(s3_lake)
    assert [iv.id for iv in lake.partitions("raw")] == [
        Interval.parse(s, e).id
        for s, e in (("2024-01-01", "2024-01-02"), ("2024-01-02", "2024-01-03"))
    ]
    latest = read_json(lake.latest_path)
    assert latest["n_events"] == len(records) and latest["path"].startswith(s3_lake)
    lineage = json.loads(_recsys(settings, "lineage", "1", "--json", env=env).stdout)
    assert lineage["features"]["version"] == latest["version"]
    assert not (settings.home / "lake").exists()
