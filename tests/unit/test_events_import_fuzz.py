"""Fuzzing ``recsys events import``: random rows written as CSV, JSON lines and Parquet.

Each generated record is tagged: ``good`` (must load), ``bad`` (must be rejected) or ``any`` (random
types and text: either, but never a crash). The oracle below is written independently of
``recsys.data.events`` so that the two can disagree.
"""

import csv
import datetime as dt
import io
import json
import math
import re
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys import cli
from recsys import schema as S
from recsys.data import contract, event_files, events

NOW = dt.datetime(2026, 6, 1, 12)
EARLIEST, LATEST = dt.datetime(1995, 1, 1), NOW + dt.timedelta(days=1)
FUZZ = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
# The only errors an import may raise, and then only for a file it cannot read at all.
FILE_ERRORS = re.compile(r"missing required column|empty file|duplicate column|unreadable CSV")

# --- strategies ----------------------------------------------------------------------------------

# Ids the store must accept: no whitespace (categories Z*, Cc), no surrogates, not empty.
ID_TEXT = st.text(
    st.characters(exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1, max_size=24
)
GOOD_ID = st.one_of(ID_TEXT, st.integers(0, 10**12))
GOOD_DATETIME = st.datetimes(dt.datetime(1995, 1, 2), dt.datetime(2026, 5, 30))
OFFSET = st.integers(-14 * 60, 14 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
GOOD_TIME = st.one_of(
    GOOD_DATETIME.map(lambda t: t.isoformat()),
    st.builds(lambda t, tz: t.replace(tzinfo=tz).isoformat(), GOOD_DATETIME, OFFSET),
    GOOD_DATETIME.map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")),
    GOOD_DATETIME.map(lambda t: int(t.replace(tzinfo=dt.UTC).timestamp())),
    GOOD_DATETIME.map(lambda t: str(t.replace(tzinfo=dt.UTC).timestamp())),
)
GOOD_VALUE = st.floats(-1e6, 1e6, allow_nan=False)


@st.composite
def good_records(draw):
    rec = {S.USER_ID: draw(GOOD_ID), S.ITEM_ID: draw(GOOD_ID), S.EVENT_TIME: draw(GOOD_TIME)}
    if draw(st.booleans()):
        rec[S.EVENT_TYPE] = draw(st.sampled_from(S.EVENT_TYPES))
    if draw(st.booleans()) or rec.get(S.EVENT_TYPE) == "rating":  # a rating needs its value
        rec[S.VALUE] = draw(GOOD_VALUE)
    if draw(st.booleans()):
        rec[S.EVENT_ID] = draw(ID_TEXT)
    return rec


# Mutations that make a good record bad in every format (text survives CSV and Parquet).
TEXT_MUTATIONS = {
    "no user": lambda r, _: {**r, S.USER_ID: None},
    "empty item": lambda r, _: {**r, S.ITEM_ID: ""},
    "long id": lambda r, draw: {**r, S.USER_ID: "u" * draw(st.integers(129, 400))},
    "space in id": lambda r, _: {**r, S.ITEM_ID: f"{r[S.ITEM_ID]} x"},
    "NUL in id": lambda r, _: {**r, S.USER_ID: f"a\x00{r[S.USER_ID]}"},
    "long event id": lambda r, _: {**r, S.EVENT_ID: "e" * 129},
    "year 1900": lambda r, _: {**r, S.EVENT_TIME: "1900-01-01T00:00:00"},
    "year 2200": lambda r, _: {**r, S.EVENT_TIME: "2200-06-01T00:00:00Z"},
    "unix 1970": lambda r, _: {**r, S.EVENT_TIME: "86400"},
    "unparseable time": lambda r, _: {**r, S.EVENT_TIME: "soon"},
    "huge unix time": lambda r, _: {**r, S.EVENT_TIME: "1e300"},
    "no time": lambda r, _: {k: v for k, v in r.items() if k != S.EVENT_TIME},
    "bad ingested_at": lambda r, _: {**r, S.INGESTED_AT: "2300-01-01"},
    "unknown type": lambda r, _: {**r, S.EVENT_TYPE: "share"},
    "text value": lambda r, _: {**r, S.VALUE: "four"},
    "infinite value": lambda r, _: {**r, S.VALUE: "inf"},
    "rating without value": lambda r, _: {
        **{k: v for k, v in r.items() if k != S.VALUE},
        S.EVENT_TYPE: "rating",
    },
    "control character in id": lambda r, _: {**r, S.ITEM_ID: f"{r[S.ITEM_ID]}\x7f"},
    "event after its ingestion": lambda r, _: {
        **r,
        S.EVENT_TIME: "2020-01-01T00:06:00",
        S.INGESTED_AT: "2020-01-01T00:00:00",
    },
}
# Only JSON keeps these types as they are.
TYPE_MUTATIONS = {
    "list id": lambda r, _: {**r, S.USER_ID: [1, 2]},
    "object id": lambda r, _: {**r, S.ITEM_ID: {"id": 1}},
    "bool id": lambda r, _: {**r, S.USER_ID: True},
    "fraction id": lambda r, _: {**r, S.ITEM_ID: 1.5},
    "bool value": lambda r, _: {**r, S.VALUE: False},
    "unpaired surrogate": lambda r, _: {**r, S.USER_ID: "u\ud800"},
    "integer time far out": lambda r, _: {**r, S.EVENT_TIME: 10**30},
}


@st.composite
def bad_records(draw, mutations):
    name = draw(st.sampled_from(sorted(mutations)))
    return mutations[name](draw(good_records()), draw)


ANY_SCALAR = st.one_of(
    st.none(),
    st.text(max_size=30),
    st.text(st.characters(codec=None), max_size=10),  # surrogates included
    st.integers(-(10**20), 10**20),
    st.floats(),
    st.booleans(),
    GOOD_TIME,
)
ANY_VALUE = st.one_of(ANY_SCALAR, st.lists(ANY_SCALAR, max_size=3))
COLUMNS = (*S.EVENT_COLUMNS, events.REQUEST_ID, "extra")


@st.composite
def any_records(draw, values=ANY_VALUE):
    keys = draw(st.lists(st.sampled_from(COLUMNS), unique=True, max_size=len(COLUMNS)))
    return {k: draw(values) for k in keys}


def tagged(mutations, values):
    return st.one_of(
        st.tuples(st.just("good"), good_records()),
        st.tuples(st.just("bad"), bad_records(mutations)),
        st.tuples(st.just("any"), any_records(values)),
    )


# --- the oracle ----------------------------------------------------------------------------------


def valid_stored(row) -> bool:
    """A row as stored: what the validation gate and serving may rely on."""
    ids_ok = all(
        isinstance(row[c], str) and 0 < len(row[c]) <= 128 and not re.search(r"\s", row[c])
        for c in (S.EVENT_ID, S.USER_ID, S.ITEM_ID)
    )
    when = dt.datetime.fromisoformat(row[S.EVENT_TIME])
    value = row[S.VALUE]
    return (
        ids_ok
        and "\x00" not in row[S.USER_ID] + row[S.ITEM_ID]
        and row[S.EVENT_TYPE] in S.EVENT_TYPES
        and when.tzinfo is None
        and EARLIEST <= when <= LATEST
        and EARLIEST <= row[S.INGESTED_AT] <= LATEST
        and (value is None or math.isfinite(value))
    )


def _run(tmp_path, store_url, name, data):
    """Import ``data`` as ``name`` into an emptied store: (result or error, rows, rejects)."""
    folder = tmp_path / uuid.uuid4().hex
    folder.mkdir()
    path, rejects = folder / name, folder / "rejects.jsonl"
    path.write_bytes(data)
    store = events.EventStore(store_url)
    with store.engine.begin() as conn:  # one database per test on each backend: emptied per example
        conn.execute(sa.delete(events.events_table))
    try:
        result = event_files.import_file(store, path, rejects, now=NOW)
    except ValueError as err:
        assert FILE_ERRORS.search(str(err)), err
        assert store.count() == 0 and not rejects.exists()
        return err, [], []
    with store.engine.connect() as conn:
        stored = [r._mapping for r in conn.execute(sa.select(events.events_table))]
    lines = rejects.read_text().splitlines() if rejects.exists() else []
    return result, stored, [json.loads(line) for line in lines]


def _check(result, stored, rejects, expected, unit):
    """The properties every import must have; ``expected``: {line or row number: tag}."""
    assert result["read"] == len(expected)
    assert result["inserted"] + result["duplicates"] + result["rejected"] == result["read"]
    assert result["inserted"] == len(stored)
    assert all(valid_stored(row) for row in stored)
    assert len(rejects) == result["rejected"]
    assert (result["rejects"] is None) == (result["rejected"] == 0)
    numbers = [r[unit] for r in rejects]
    assert numbers == sorted(set(numbers)) and set(numbers) <= set(expected)
    assert all(isinstance(r["reason"], str) and r["reason"] and "raw" in r for r in rejects)
    for number, tag in expected.items():
        if tag == "good":
            assert number not in numbers, (number, rejects)
        elif tag == "bad":
            assert number in numbers, (number, expected)


# --- CSV -----------------------------------------------------------------------------------------


def _csv_text(value) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


CSV_LINE = st.one_of(
    st.tuples(st.just("blank"), st.sampled_from([b"", b"   ", b"\t"])),
    st.tuples(st.just("bytes"), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("non-utf8"), st.binary(max_size=10).map(lambda b: b"u\xff\xfe," + b)),
    st.tuples(st.just("short"), st.just(b"only-one-field")),
    st.tuples(st.just("record"), tagged(TEXT_MUTATIONS, st.one_of(st.none(), st.text()))),
)


@FUZZ
@given(
    optional=st.lists(st.sampled_from(COLUMNS[:-1]), unique=True),
    lines=st.lists(CSV_LINE, max_size=12),
)
def test_fuzzed_csv_imports_never_crash(tmp_path, store_url, optional, lines):
    header = list(dict.fromkeys([*S.REQUIRED_COLUMNS, *optional]))
    buf, expected = io.BytesIO(), {}
    buf.write((",".join(header) + "\n").encode())
    for kind, payload in lines:
        number = 1 + len(re.findall(rb"\r\n|\r|\n", buf.getvalue()))
        if kind == "record":
            tag, rec = payload
            if set(rec) - set(header):  # a mutated column the file does not have: unknown
                tag = "any"
            text = io.StringIO()
            csv.writer(text, lineterminator="\n").writerow([_csv_text(rec.get(h)) for h in header])
            buf.write(text.getvalue().encode())
            expected[number] = tag
            continue
        payload = payload.translate(None, b'\r\n"')
        buf.write(payload + b"\n")
        if payload.decode("utf-8", "surrogateescape").strip():
            expected[number] = "bad" if kind in ("non-utf8", "short") else "any"
    result, stored, rejects = _run(tmp_path, store_url, "events.csv", buf.getvalue())
    assert not isinstance(result, Exception), result
    _check(result, stored, rejects, expected, "line")


# --- JSON lines ----------------------------------------------------------------------------------

JSON_LINE = st.one_of(
    st.tuples(st.just("blank"), st.sampled_from([b"", b"  ", b"\t"])),
    st.tuples(st.just("bytes"), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("not an object"), st.sampled_from([b"[1, 2]", b"42", b'"text"', b"null"])),
    st.tuples(
        st.just("record"), tagged({**TEXT_MUTATIONS, **TYPE_MUTATIONS}, ANY_VALUE), st.booleans()
    ),
)


@FUZZ
@given(lines=st.lists(JSON_LINE, min_size=1, max_size=12))
def test_fuzzed_jsonl_imports_never_crash(tmp_path, store_url, lines):
    out, expected, keys = [], {}, set()
    for number, (kind, *payload) in enumerate(lines, 1):
        if kind == "record":
            (tag, rec), truncate = payload
            line = json.dumps(rec).encode()  # ASCII: surrogates and all escaped
            if truncate:  # a line cut short, as by a crashed writer
                line, tag = line[: len(line) // 2], "bad"
            else:
                keys.update(rec)
        else:
            line = payload[0].translate(None, b"\r\n")
            tag = "bad" if kind == "not an object" else "any"
        out.append(line)
        if line.decode("utf-8", "surrogateescape").strip():
            expected[number] = tag
    result, stored, rejects = _run(tmp_path, store_url, "events.jsonl", b"\n".join(out) + b"\n")
    if not expected:
        assert "empty file" in str(result)
    elif isinstance(result, Exception):  # the columns of JSON lines are the keys of its objects
        assert "missing required column" in str(result)
        assert not set(S.REQUIRED_COLUMNS) <= keys
    else:
        _check(result, stored, rejects, expected, "line")


# --- Parquet -------------------------------------------------------------------------------------


def _arrow_column(values):
    """Values as an Arrow column: native when they share one Python type, else as text (Arrow
    would coerce some mixtures: 0 next to a datetime becomes a time)."""
    if len({type(v) for v in values if v is not None}) <= 1:
        try:
            return pa.array(values)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            pass
    return pa.array([None if v is None else str(v) for v in values], pa.string())


PARQUET_VALUES = st.one_of(
    ANY_SCALAR,
    GOOD_DATETIME,
    st.builds(lambda t, tz: t.replace(tzinfo=tz), GOOD_DATETIME, OFFSET),
    st.datetimes(dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31)),
    st.dates(),
    st.binary(max_size=8),
)


@FUZZ
@given(rows=st.lists(tagged(TEXT_MUTATIONS, PARQUET_VALUES), max_size=12))
def test_fuzzed_parquet_imports_never_crash(tmp_path, store_url, rows):
    columns = list(dict.fromkeys([*S.REQUIRED_COLUMNS, *(k for _, r in rows for k in r)]))
    # Text versions of the good values stay good, of the bad values bad.
    arrays = {name: _arrow_column([rec.get(name) for _, rec in rows]) for name in columns}
    expected = {number: tag for number, (tag, _) in enumerate(rows, 1)}
    buf = io.BytesIO()
    pq.write_table(pa.table(arrays), buf)
    result, stored, rejects = _run(tmp_path, store_url, "events.parquet", buf.getvalue())
    assert not isinstance(result, Exception), result
    _check(result, stored, rejects, expected, "row")


# --- examples ------------------------------------------------------------------------------------

HEADER = "user_id,item_id,event_time,value\n"


def _import_text(tmp_path, store_url, name, data):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    store = events.EventStore(store_url)
    result = event_files.import_file(store, path, tmp_path / "rejects.jsonl", now=NOW)
    rejects = (tmp_path / "rejects.jsonl").read_text().splitlines() if result["rejected"] else []
    return result, store, [json.loads(r) for r in rejects]


def test_non_utf8_csv_rows_are_rejected_and_the_rest_load(tmp_path, store_url):
    data = (
        HEADER + "u1,i1,2024-01-01,1\n"
    ).encode() + b"caf\xe9,i2,2024-01-01,2\nu3,i3,2024-01-02,\n"
    result, store, rejects = _import_text(tmp_path, store_url, "e.csv", data)
    assert (result["read"], result["inserted"], result["rejected"]) == (3, 2, 1)
    assert rejects == [{"line": 3, "reason": "not valid UTF-8", "raw": "caf\\xe9,i2,2024-01-01,2"}]
    assert store.history("u3") == ["i3"]


def test_a_missing_column_is_a_clear_error_and_imports_nothing(tmp_path, store_url):
    with pytest.raises(ValueError, match="missing required column.s. event_time; .*requires"):
        _import_text(tmp_path, store_url, "e.csv", "user_id,item_id\nu1,i1\n")
    assert events.EventStore(store_url).count() == 0
    assert not (tmp_path / "rejects.jsonl").exists()


@pytest.mark.parametrize("when", ["1900-01-01T00:00:00", "2200-01-01T00:00:00", "-2208988800"])
def test_times_far_in_the_past_or_future_are_rejected(tmp_path, store_url, when):
    result, store, (reject,) = _import_text(
        tmp_path, store_url, "e.csv", f"{HEADER}u1,i1,{when},\nu2,i2,1995-01-01T00:00:00,\n"
    )
    assert (result["inserted"], result["rejected"]) == (1, 1) and store.history("u2") == ["i2"]
    assert reject["line"] == 2 and "is outside 1995-01-01T00:00:00 .." in reject["reason"]


def test_a_one_megabyte_field_is_rejected_and_cut_in_the_reject_file(tmp_path, store_url):
    big = "x" * 1_000_000
    result, _, (reject,) = _import_text(
        tmp_path, store_url, "e.csv", f"{HEADER}{big},i1,2024-01-01,\n"
    )
    assert result["rejected"] == 1 and "user_id: longer than 128 characters" in reject["reason"]
    assert len(reject["raw"]["user_id"]) < 10_100 and "more characters]" in reject["raw"]["user_id"]
    result, _, (reject,) = _import_text(
        tmp_path, store_url, "f.jsonl", json.dumps({"x": "y" * 2_000_000})
    )
    assert "line longer than 1048576 characters" in reject["reason"]


def test_a_truncated_json_line_is_rejected_and_blank_lines_skipped(tmp_path, store_url):
    good = json.dumps({"user_id": "u1", "item_id": "i1", "event_time": "2024-01-01"})
    text = f"{good}\n\n   \n{good[:25]}\n{good.replace('u1', 'u2')}"  # no final newline
    result, store, (reject,) = _import_text(tmp_path, store_url, "e.jsonl", text)
    assert (result["read"], result["inserted"], result["rejected"]) == (3, 2, 1)
    assert reject["line"] == 4 and reject["reason"].startswith("not valid JSON")
    assert reject["raw"] == good[:25]


def test_duplicates_are_counted_and_a_clean_file_writes_no_reject_file(tmp_path, store_url):
    text = f"{HEADER}u1,i1,2024-01-01,\nu1,i1,2024-01-01,\n"
    first, _, _ = _import_text(tmp_path, store_url, "e.csv", text)
    again, _, _ = _import_text(tmp_path, store_url, "e.csv", text)
    assert (first["inserted"], first["duplicates"], again["duplicates"]) == (1, 1, 2)
    assert first["rejects"] is None and not (tmp_path / "rejects.jsonl").exists()


@pytest.mark.parametrize("data", [b"not parquet at all", b"PAR1" + b"\0" * 20 + b"PAR1"])
def test_an_unreadable_parquet_file_is_a_clear_error(tmp_path, store_url, data):
    with pytest.raises(ValueError, match="not a readable Parquet file"):
        _import_text(tmp_path, store_url, "e.parquet", data)


def test_parquet_rows_with_unusable_types_are_rejected(tmp_path, store_url):
    table = pa.table(
        {
            "user_id": pa.array([b"u1", b"\xff", b"u3"]),
            "item_id": pa.array([[1], [2], None], pa.list_(pa.int64())),
            "event_time": pa.array([dt.datetime(2024, 1, 1)] * 3, pa.timestamp("us")),
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    result, _, rejects = _import_text(tmp_path, store_url, "e.parquet", buf.getvalue())
    assert (result["read"], result["inserted"], result["rejected"]) == (3, 0, 3)
    assert "user_id: not valid UTF-8" in rejects[1]["reason"]
    assert "item_id: expected text or an integer, got list" in rejects[0]["reason"]
    assert rejects[2]["reason"] == "item_id: missing" and rejects[2]["row"] == 3


def test_overflowing_times_no_longer_crash_prepare_rows():
    for when in ("inf", "1e300", 1e300, 10**30, "0001-01-01T00:00:00+05:00"):
        (row,) = events.prepare_rows([{"user_id": "u", "item_id": "i", "event_time": when}])
        assert row[S.EVENT_TIME] == (when if isinstance(when, str) else str(int(when)))


def test_the_cli_help_states_the_limits(capsys):
    limits = contract.LIMITS
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["events", "import", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"at most {limits.max_id_chars} characters" in text
    assert f"from {limits.earliest:%Y-%m-%d} to now + {limits.future.days} day" in text
    assert f"at most {limits.max_record_chars} characters" in text
