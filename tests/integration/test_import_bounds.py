"""Bounded imports: files stream in chunks (memory stays flat), all or nothing; the reject file is
written without following a symlink; no output shows a password. On SQLite and PostgreSQL."""

import json

import pytest

from recsys import cli
from recsys.config import Settings, redact
from recsys.data import contract, event_files, events


def _csv(path, n, bad_every=0):
    lines = ["user_id,item_id,event_time"]
    for k in range(n):
        user = "u 1" if bad_every and k % bad_every == 0 else f"u{k % 50}"
        lines.append(f"{user},i{k % 97},{1_700_000_000 + k}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_large_file_streams_in_chunks(store_url, tmp_path, monkeypatch):
    seen = []
    real = event_files.prepare_rows
    monkeypatch.setattr(event_files, "IMPORT_CHUNK", 1000)

    def counted(records, **kwargs):
        seen.append(len(records))
        return real(records, **kwargs)

    monkeypatch.setattr(event_files, "prepare_rows", counted)
    store = events.EventStore(store_url)
    path = _csv(tmp_path / "events.csv", 4500, bad_every=100)
    result = event_files.import_file(store, path, tmp_path / "rejects.jsonl")
    assert (result["read"], result["inserted"], result["rejected"]) == (4500, 4455, 45)
    assert len(seen) == 5 and max(seen) <= 1000  # never the whole file at once
    assert store.count() == 4455
    store.engine.dispose()


def test_a_file_found_unreadable_late_imports_nothing(store_url, tmp_path, monkeypatch):
    """JSON lines' columns are known at the end: lacking one, nothing of the file is kept."""
    monkeypatch.setattr(event_files, "IMPORT_CHUNK", 10)
    path = tmp_path / "events.jsonl"
    path.write_text(
        "".join(json.dumps({"item_id": f"i{k}", "event_time": 1}) + "\n" for k in range(50))
    )
    store = events.EventStore(store_url)
    with pytest.raises(ValueError, match="missing required column"):
        event_files.import_file(store, path, tmp_path / "rejects.jsonl")
    assert store.count() == 0 and not (tmp_path / "rejects.jsonl").exists()
    too_many = contract.ImportLimits(max_rows=30)
    with pytest.raises(ValueError, match="over the 30 rows"):
        event_files.import_file(
            store, _csv(tmp_path / "e.csv", 45), tmp_path / "r.jsonl", limits=too_many
        )
    too_big = contract.ImportLimits(max_bytes=100)
    with pytest.raises(ValueError, match="bytes, over the 100"):
        event_files.import_file(
            store, _csv(tmp_path / "e.csv", 45), tmp_path / "r.jsonl", limits=too_big
        )
    assert store.count() == 0 and not list(tmp_path.glob(".*.tmp"))
    store.engine.dispose()


def test_the_reject_file_replaces_a_symlink_and_never_writes_through_it(store_url, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    rejects = tmp_path / "rejects.jsonl"
    rejects.symlink_to(victim)
    store = events.EventStore(store_url)
    result = event_files.import_file(store, _csv(tmp_path / "e.csv", 20, bad_every=5), rejects)
    assert result["rejected"] == 4
    assert victim.read_text() == "precious\n"
    assert not rejects.is_symlink() and len(rejects.read_text().splitlines()) == 4
    store.engine.dispose()


def test_no_output_shows_the_store_password(postgres_db, tmp_path, monkeypatch, capsys):
    url = postgres_db().replace("postgres@", "postgres:s3cret-pw@")  # trust auth ignores it
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RECSYS_EVENT_STORE_URL", url)
    cli.main(["events", "import", "--file", str(_csv(tmp_path / "e.csv", 5)), "--json"])
    out = capsys.readouterr().out
    assert json.loads(out)["inserted"] == 5
    assert "s3cret-pw" not in out and "postgres:***@" in out
    assert "s3cret-pw" not in repr(Settings.from_env())


@pytest.mark.parametrize(
    "url,shown",
    [
        ("postgresql+psycopg://u:pw@h:5432/db", "postgresql+psycopg://u:***@h:5432/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
        ("https://user:tok@mlflow:5000", "https://user:***@mlflow:5000"),
    ],
)
def test_redact(url, shown):
    assert redact(url) == shown
