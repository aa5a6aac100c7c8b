"""Event files read record by record: CSV, JSON lines and Parquet, local or at any fsspec URL,
gzipped or not. A record that cannot even be parsed comes as a reject entry with its reason."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from recsys import schema as S
from recsys.data.contract import LIMITS, BadValue, ImportLimits
from recsys.data.events import REQUEST_ID

if TYPE_CHECKING:
    import pandas as pd

OPTIONAL_COLUMNS = tuple(c for c in S.EVENT_COLUMNS if c not in S.REQUIRED_COLUMNS)


_KNOWN_COLUMNS = (*S.EVENT_COLUMNS, REQUEST_ID)


_BAD_BYTES = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8 (surrogateescape)


# One record of a file as its reader yields it: (number, the record, None), or (number, None, the
# reject entry) for one that could not even be parsed.
Item = tuple[int, dict[str, Any] | None, dict[str, Any] | None]


@dataclass
class _Stream:
    """A file read record by record, lazily: its ``items`` come one at a time."""

    unit: str  # how records are numbered: "line" (CSV, JSON lines, 1-based) or "row" (Parquet)
    items: Iterator[Item]
    columns: list[str] = field(default_factory=list)  # known once the header (or file) is read


def _shown(value: Any, limits: ImportLimits) -> Any:
    """A JSON-safe copy of a raw value for the reject file: bad bytes as \\xNN, long text cut."""
    if isinstance(value, dict):
        return {str(k): _shown(v, limits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_shown(v, limits) for v in value]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    elif isinstance(value, float) and not math.isfinite(value):
        return str(value)
    elif not isinstance(value, str | int | float | bool | None):
        value = str(value)
    if isinstance(value, str):
        try:  # a byte that was not UTF-8 (surrogateescape) shows as \\xNN
            value = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # an unpaired surrogate from a JSON \\uXXXX escape
            value = value.encode("utf-8", "backslashreplace").decode("utf-8")
        if len(value) > limits.max_reject_chars:
            cut = len(value) - limits.max_reject_chars
            value = f"{value[: limits.max_reject_chars]}...[{cut} more characters]"
    return value


def reject_entry(unit: str, number: int, reason: str, raw: Any, limits: ImportLimits) -> dict:
    return {unit: number, "reason": reason, "raw": _shown(raw, limits)}


_SCHEMA = (
    f"the event schema requires {', '.join(S.REQUIRED_COLUMNS)} "
    f"(optional: {', '.join(OPTIONAL_COLUMNS)})"
)


def _missing_columns_error(url: str, columns: Sequence[str]) -> ValueError | None:
    dupes = sorted({c for c in columns if list(columns).count(c) > 1})
    if dupes:
        return ValueError(f"{url}: duplicate column(s) {', '.join(dupes)}; {_SCHEMA}")
    missing = [c for c in S.REQUIRED_COLUMNS if c not in columns]
    if not missing:
        return None
    return ValueError(f"{url}: missing required column(s) {', '.join(missing)}; {_SCHEMA}")


def _read_csv(
    handle: IO[bytes], url: str, limits: ImportLimits, columns: list[str]
) -> Iterator[Item]:
    text = io.TextIOWrapper(handle, encoding="utf-8-sig", errors="surrogateescape", newline="")
    consumed, count = [], 0

    def lines() -> Iterator[str]:  # remembers the physical lines of the current record
        nonlocal count
        for line in text:
            count += 1
            consumed.append(line)
            yield line

    reader, header = csv.reader(lines()), None
    old_limit = csv.field_size_limit(limits.max_record_chars)  # process-wide: restored below
    try:
        while True:
            consumed.clear()
            first, problem = count + 1, None
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as err:
                fields, problem = [], f"malformed CSV: {err}"
            raw = "".join(consumed)
            if not raw.strip():
                continue  # blank line: not a record
            if header is None:
                if problem or _BAD_BYTES.search(raw):
                    raise ValueError(f"{url}: line {first}: unreadable CSV header {raw[:200]!r}")
                header = [name.strip() for name in fields]
                columns[:] = header
                if err := _missing_columns_error(url, header):
                    raise err
                continue
            if problem is None and _BAD_BYTES.search(raw):
                problem = "not valid UTF-8"
            elif problem is None and len(raw) > limits.max_record_chars:
                problem = f"record longer than {limits.max_record_chars} characters"
            elif problem is None and len(fields) != len(header):
                problem = f"{len(fields)} field(s) where the header has {len(header)}"
            if problem:
                yield first, None, reject_entry("line", first, problem, raw.rstrip("\r\n"), limits)
            else:
                yield first, {h: v or None for h, v in zip(header, fields, strict=True)}, None
    finally:
        csv.field_size_limit(old_limit)
    if header is None:
        raise ValueError(f"{url}: empty file, no CSV header; {_SCHEMA}")


def _read_jsonl(
    handle: IO[bytes], url: str, limits: ImportLimits, columns: list[str]
) -> Iterator[Item]:
    """JSON lines' columns are the keys of all its objects: they are known, and checked, at the
    end (``import_file`` rolls back what it loaded when they lack a required one)."""
    keys: dict[str, None] = {}
    records = rejected = 0
    text = io.TextIOWrapper(handle, encoding="utf-8-sig", errors="surrogateescape")
    for number, line in enumerate(text, 1):
        if not line.strip():
            continue
        problem, obj = None, None
        if _BAD_BYTES.search(line):
            problem = "not valid UTF-8"
        elif len(line) > limits.max_record_chars:
            problem = f"line longer than {limits.max_record_chars} characters"
        else:
            try:
                obj = json.loads(line.rstrip("\r\n"))
            except (ValueError, RecursionError) as err:  # truncated, not JSON, nested too deep
                problem = f"not valid JSON: {err}"
            else:
                if not isinstance(obj, dict):
                    problem = f"not a JSON object but {type(obj).__name__}"
        if problem:
            rejected += 1
            yield number, None, reject_entry("line", number, problem, line.rstrip("\r\n"), limits)
        else:
            keys.update(dict.fromkeys(obj))
            records += 1
            yield number, obj, None
    columns[:] = list(keys)
    if not records and not rejected:
        raise ValueError(f"{url}: empty file, no events; {_SCHEMA}")
    if records and (err := _missing_columns_error(url, columns)):
        raise err


def _read_parquet(
    handle: IO[bytes], url: str, limits: ImportLimits, columns: list[str]
) -> Iterator[Item]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(handle)
        columns[:] = parquet.schema_arrow.names
    except (pa.ArrowException, OSError, ValueError) as err:
        raise ValueError(f"{url}: not a readable Parquet file ({err})") from err
    if err := _missing_columns_error(url, columns):
        raise err
    wanted = [c for c in columns if c in _KNOWN_COLUMNS]
    number = 0
    try:
        for batch in parquet.iter_batches(batch_size=10_000, columns=wanted):
            values = {name: _column_values(batch.column(name)) for name in wanted}
            for i in range(batch.num_rows):
                number += 1
                rec = {name: values[name][i] for name in wanted}
                bad = [
                    f"{k}: unreadable value ({v})" for k, v in rec.items() if type(v) is BadValue
                ]
                if bad:
                    yield number, None, reject_entry("row", number, "; ".join(bad), rec, limits)
                else:
                    yield number, rec, None
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"{url}: cannot read Parquet row {number + 1} onwards ({err})") from err


def _column_values(column: Any) -> list[Any]:
    """Python values of an Arrow column; a value that has none (a year 10000 time) is a BadValue."""
    try:
        return column.to_pylist()
    except (ValueError, OverflowError, ArithmeticError):
        values = []
        for scalar in column:
            try:
                values.append(scalar.as_py())
            except (ValueError, OverflowError, ArithmeticError) as err:
                values.append(BadValue(str(err)))
        return values


def _open_event_file(url: str) -> tuple[str, Any, str, str | None]:
    """Check a file's type and open its filesystem: ``(suffix, fs, fs_path, compression)``."""
    import fsspec

    name = Path(url).name.lower()
    gzipped = name.endswith(".gz")
    suffix = Path(name.removesuffix(".gz")).suffix
    if suffix not in _READERS or (gzipped and suffix == ".parquet"):
        kind = suffix + ".gz" if gzipped else suffix
        raise ValueError(
            f"{url}: unsupported file type {kind!r}; use .csv, .parquet or .jsonl "
            "(.csv.gz and .jsonl.gz when gzipped)"
        )
    try:
        fs, fs_path = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as err:  # unknown protocol, or its package is missing
        raise ValueError(f"{url}: cannot open this location: {err}") from err
    if not fs.isfile(fs_path):
        raise FileNotFoundError(f"{url}: no such file")
    return suffix, fs, fs_path, "gzip" if gzipped else None


_READERS = {".csv": _read_csv, ".parquet": _read_parquet, ".jsonl": _read_jsonl}
_READERS[".json"] = _read_jsonl


_UNITS = {".csv": "line", ".parquet": "row", ".jsonl": "line", ".json": "line"}


@contextlib.contextmanager
def open_records(url: str, limits: ImportLimits) -> Iterator[_Stream]:
    """The file opened as a stream of its records (read as they are asked for)."""
    suffix, fs, fs_path, compression = _open_event_file(url)
    size = fs.size(fs_path)
    if size is not None and size > limits.max_bytes:
        raise ValueError(f"{url}: {size} bytes, over the {limits.max_bytes} an import may read")
    with fs.open(fs_path, "rb", compression=compression) as handle:
        columns: list[str] = []
        yield _Stream(_UNITS[suffix], _READERS[suffix](handle, url, limits, columns), columns)


def read_event_file(path: str | Path) -> pd.DataFrame:
    """Read a CSV, Parquet or JSON-lines file in the documented schema (checked for columns).

    ``path`` is a local path or an fsspec URL (``file://``, ``memory://``, ``s3://`` where its
    package is installed, ...). CSV and JSON lines may be gzipped (``.csv.gz``, ``.jsonl.gz``).
    Strict: a line that cannot be parsed raises ValueError naming it (``import_file`` instead
    rejects it and goes on). CSV values are text, empty fields None.
    """
    import pandas as pd

    with open_records(str(path), LIMITS) as stream:
        records = []
        for number, rec, bad in stream.items:
            if bad is not None:
                raise ValueError(f"{path}: {stream.unit} {number}: {bad['reason']}")
            records.append(rec)
        return pd.DataFrame.from_records(records, columns=stream.columns)
