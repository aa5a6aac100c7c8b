"""The `recsys` command line, end to end on a small synthetic event file."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from recsys import synthetic
from recsys.lake import Interval, Lake, read_json

pytestmark = pytest.mark.slow

RECSYS = str(Path(sys.executable).parent / "recsys")


def _recsys(settings, *args, check=True):
    env = {
        "RECSYS_HOME": str(settings.home),
        "PATH": "/usr/bin:/bin",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "GIT_PYTHON_REFRESH": "quiet",
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

    trained = json.loads(
        _recsys(settings, "train", "--mode", "full", "--epochs", "5", "--json").stdout
    )
    assert trained["version"] == "1"
    assert trained["test.ndcg_at_10"] > trained["popularity.ndcg_at_10"]

    promoted = json.loads(_recsys(settings, "promote", "--json").stdout)
    assert promoted["promoted"] and promoted["champion"] == "1"
    again = json.loads(_recsys(settings, "promote", "--json").stdout)
    assert not again["promoted"] and again["reason"] == "already champion"

    (row,) = json.loads(_recsys(settings, "registry", "--json").stdout)
    assert set(row["aliases"]) == {"champion", "challenger"} and row["decision"] == "promoted"

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
