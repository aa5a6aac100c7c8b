"""Event sources: every MovieLens format, and event files from local paths or fsspec URLs.

All data here is hand-written (three ratings); no MovieLens file is ever stored in the repository.
"""

import gzip
import json
import uuid
import zipfile

import fsspec
import pandas as pd
import pytest

from recsys import cli
from recsys import schema as S
from recsys.data import event_readers, events, movielens

# (user, item, rating, timestamp): the same three ratings in every format below.
RATINGS = [("196", "242", 3.0, 881250949), ("186", "302", 3.5, 891717742), ("22", "377", 1.0, 1)]
INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(
    f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in RATINGS
)
UDATA = "".join(f"{u}\t{i}\t{r:g}\t{t}\n" for u, i, r, t in RATINGS)
RATINGS_DAT = "".join(f"{u}::{i}::{r:g}::{t}\n" for u, i, r, t in RATINGS)
RATINGS_CSV = "userId,movieId,rating,timestamp\n" + "".join(
    f"{u},{i},{r},{t}\n" for u, i, r, t in RATINGS
)
SOURCES = {  # file name -> (content, detected format, event id prefix)
    "ml-100k.inter": (INTER, "inter", "ml100k"),
    "u.data": (UDATA, "udata", "ml100k"),
    "ratings.dat": (RATINGS_DAT, "dat", "ml"),
    "ratings.csv": (RATINGS_CSV, "csv", "ml"),
}


def _write_wheel(path, inter=INTER):
    with zipfile.ZipFile(path, "w") as zf:
        if inter is not None:
            zf.writestr(movielens.INTER_PATH, inter)
        zf.writestr("recbole/__init__.py", "")
    return path


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_movielens_format_gives_the_same_rating_events(tmp_path, name):
    text, fmt, prefix = SOURCES[name]
    path = tmp_path / name
    path.write_text(text)
    assert movielens.detect_format(path) == fmt
    records = movielens.load(path)
    assert records == [
        {
            S.EVENT_ID: f"{prefix}-{u}-{i}-{t}",
            S.USER_ID: u,
            S.ITEM_ID: i,
            S.EVENT_TYPE: "rating",
            S.EVENT_TIME: t,
            S.VALUE: r,
        }
        for u, i, r, t in RATINGS
    ]


def test_the_format_comes_from_the_content_not_only_the_name(tmp_path):
    path = tmp_path / "export.txt"
    for text, fmt, _ in SOURCES.values():
        path.write_text(text)
        assert movielens.detect_format(path) == fmt


def test_the_recbole_wheel_reads_as_movielens_100k(tmp_path):
    wheel = _write_wheel(tmp_path / movielens.WHEEL_NAME)
    assert movielens.detect_format(wheel) == "wheel"
    assert movielens.load(wheel) == movielens.read_inter(INTER)
    assert movielens.load_ml100k(wheel, tmp_path) == movielens.read_inter(INTER)
    assert movielens.load(wheel)[0][S.EVENT_ID] == "ml100k-196-242-881250949"
    with pytest.raises(ValueError, match="not a recbole wheel"):
        movielens.load(_write_wheel(tmp_path / "other-1.0-py3-none-any.whl", inter=None))


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("ratings.csv", "userId,movieId,tag,timestamp\n1,2,funny,3\n"),
        ("ratings.dat", "1::2::3\n"),
        ("u.data", "1 2 3 4\n"),
        ("movies.dat", "1::Toy Story (1995)::Animation|Children's|Comedy\n"),
        ("empty.csv", ""),
    ],
)
def test_unknown_movielens_formats_are_rejected_clearly(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match="unknown MovieLens format.*ratings.dat"):
        movielens.load(path)


def test_malformed_movielens_lines_name_the_line(tmp_path):
    with pytest.raises(ValueError, match="line 2"):
        movielens.read_ratings_dat("1::2::3::4\n1::2::3\n")
    with pytest.raises(ValueError, match="line 2"):
        movielens.read_ratings_csv("userId,movieId,rating,timestamp\n1,2,3\n")
    with pytest.raises(FileNotFoundError, match="no such file"):
        movielens.load(tmp_path / "ratings.dat")


def _run_cli(settings, capsys, *args):
    cli.main(["events", "import", *args, "--json"])
    return json.loads(capsys.readouterr().out)


def test_cli_imports_any_movielens_file_and_keeps_the_100k_flag(settings, tmp_path, capsys):
    (tmp_path / "ratings.dat").write_text(RATINGS_DAT)
    (tmp_path / "u.data").write_text(UDATA)
    dat = _run_cli(settings, capsys, "--movielens", str(tmp_path / "ratings.dat"))
    assert dat["inserted"] == 3 and dat["source"].startswith("MovieLens-1M")
    again = _run_cli(settings, capsys, "--movielens", str(tmp_path / "ratings.dat"))
    assert again["inserted"] == 0 and again["duplicates"] == 3
    old = _run_cli(settings, capsys, "--movielens-100k", str(tmp_path / "u.data"))
    assert (old["inserted"], old["total_in_store"], old["source"]) == (3, 6, "MovieLens-100K")
    assert events.EventStore(settings.event_store_url).history("196") == ["242", "242"]


def test_cli_movielens_errors_are_clean(settings, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(SystemExit) as done:
        cli.main(["events", "import", "--movielens", str(tmp_path / "notes.txt")])
    assert done.value.code == 1 and "unknown MovieLens format" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["events", "import", "--movielens", "a", "--file", "b"])


# --- event files from fsspec URLs ----------------------------------------------------------------

FRAME = pd.DataFrame(
    {
        "user_id": ["1", "2"],
        "item_id": ["10", "20"],
        "event_time": ["2024-01-01T00:00:00", "2024-01-02T00:00:00"],
        "value": ["1.5", "2.0"],
    }
)
ENCODERS = {
    ".csv": lambda f: f.to_csv(index=False).encode(),
    ".jsonl": lambda f: f.to_json(orient="records", lines=True).encode(),
    ".parquet": lambda f: f.to_parquet(),
}


def _encode(name, frame=FRAME):
    base = name.removesuffix(".gz")
    data = ENCODERS[base[base.rindex(".") :]](frame)
    return gzip.compress(data) if name.endswith(".gz") else data


def _put(url, data):
    with fsspec.open(url, "wb") as fh:
        fh.write(data)
    return url


@pytest.fixture
def memory_root():
    """A private folder on fsspec's in-memory filesystem, removed afterwards."""
    root = f"memory://recsys-test-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def _check(frame):
    assert frame[S.USER_ID].astype(str).tolist() == ["1", "2"]
    assert frame[S.ITEM_ID].astype(str).tolist() == ["10", "20"]
    assert frame[S.EVENT_TIME].astype(str).tolist()[1] == "2024-01-02T00:00:00"


NAMES = ["e.csv", "e.jsonl", "e.parquet", "e.csv.gz", "e.jsonl.gz"]


@pytest.mark.parametrize("name", NAMES)
def test_read_event_file_from_memory_urls(memory_root, name):
    _check(event_readers.read_event_file(_put(f"{memory_root}/drop/{name}", _encode(name))))


@pytest.mark.parametrize("name", NAMES)
def test_read_event_file_from_file_urls_and_local_paths(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(_encode(name))
    assert path.as_uri().startswith("file:///")
    _check(event_readers.read_event_file(path.as_uri()))
    _check(event_readers.read_event_file(path))
    _check(event_readers.read_event_file(str(path)))


def test_gzipped_files_are_really_decompressed(tmp_path):
    path = tmp_path / "e.csv.gz"
    path.write_bytes(_encode("e.csv"))  # named .gz but not gzipped
    with pytest.raises(OSError):
        event_readers.read_event_file(path)


def test_url_errors_are_clear(memory_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        event_readers.read_event_file(f"{memory_root}/missing.csv")
    with pytest.raises(FileNotFoundError, match="no such file"):
        event_readers.read_event_file((tmp_path / "missing.jsonl.gz").as_uri())
    bad = _put(f"{memory_root}/bad.csv.gz", gzip.compress(b"user,item\n1,2\n"))
    with pytest.raises(ValueError, match="missing required column.*user_id, item_id, event_time"):
        event_readers.read_event_file(bad)
    for name in ("e.parquet.gz", "e.txt", "e.gz"):
        with pytest.raises(ValueError, match="unsupported file type"):
            event_readers.read_event_file(f"{memory_root}/{name}")
    with pytest.raises(ValueError, match="cannot open"):
        event_readers.read_event_file("no-such-protocol://bucket/e.csv")


def test_cli_imports_a_memory_url(settings, memory_root, capsys):
    url = _put(f"{memory_root}/e.jsonl.gz", _encode("e.jsonl.gz"))
    result = _run_cli(settings, capsys, "--file", url)
    assert (result["inserted"], result["source"]) == (2, url)
