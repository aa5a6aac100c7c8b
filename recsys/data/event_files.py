"""Event files: read CSV / JSONL / Parquet (local or any fsspec URL), check every row against
``ImportLimits``, load the good rows into the event store and write the bad ones to a reject file
with their reason (``import_file``). A file can be fixed and sent again, so this is stricter than
the store itself, which keeps whatever it is given (``recsys.data.events.prepare_rows``).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import math
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from recsys import schema as S
from recsys.data.contract import LIMITS, BadValue, ImportLimits, check_record
from recsys.data.events import (
    REQUEST_ID,
    EventStore,
    _summary,
    prepare_rows,
    utc_naive,
)

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


OPTIONAL_COLUMNS = tuple(c for c in S.EVENT_COLUMNS if c not in S.REQUIRED_COLUMNS)
_KNOWN_COLUMNS = (*S.EVENT_COLUMNS, REQUEST_ID)
_BAD_BYTES = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8 (surrogateescape)


@dataclass
class _Parsed:
    """A file read record by record: good records, and the ones that could not even be parsed."""

    unit: str  # how records are numbered: "line" (CSV, JSON lines, 1-based) or "row" (Parquet)
    columns: list[str] = field(default_factory=list)
    records: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)


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


def _reject(unit: str, number: int, reason: str, raw: Any, limits: ImportLimits) -> dict:
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


def _read_csv(handle: IO[bytes], url: str, limits: ImportLimits) -> _Parsed:
    text = io.TextIOWrapper(handle, encoding="utf-8-sig", errors="surrogateescape", newline="")
    out, consumed, count = _Parsed("line"), [], 0

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
                header = out.columns = [name.strip() for name in fields]
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
                out.rejects.append(_reject("line", first, problem, raw.rstrip("\r\n"), limits))
            else:
                rec = {h: v or None for h, v in zip(header, fields, strict=True)}
                out.records.append((first, rec))
    finally:
        csv.field_size_limit(old_limit)
    if header is None:
        raise ValueError(f"{url}: empty file, no CSV header; {_SCHEMA}")
    return out


def _read_jsonl(handle: IO[bytes], url: str, limits: ImportLimits) -> _Parsed:
    out, columns = _Parsed("line"), {}
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
            out.rejects.append(_reject("line", number, problem, line.rstrip("\r\n"), limits))
        else:
            columns.update(dict.fromkeys(obj))
            out.records.append((number, obj))
    out.columns = list(columns)
    if not out.records and not out.rejects:
        raise ValueError(f"{url}: empty file, no events; {_SCHEMA}")
    if out.records and (err := _missing_columns_error(url, out.columns)):
        raise err
    return out


def _read_parquet(handle: IO[bytes], url: str, limits: ImportLimits) -> _Parsed:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = _Parsed("row")
    try:
        parquet = pq.ParquetFile(handle)
        out.columns = parquet.schema_arrow.names
    except (pa.ArrowException, OSError, ValueError) as err:
        raise ValueError(f"{url}: not a readable Parquet file ({err})") from err
    if err := _missing_columns_error(url, out.columns):
        raise err
    wanted = [c for c in out.columns if c in _KNOWN_COLUMNS]
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
                    out.rejects.append(_reject("row", number, "; ".join(bad), rec, limits))
                else:
                    out.records.append((number, rec))
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"{url}: cannot read Parquet row {number + 1} onwards ({err})") from err
    return out


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


def _read(url: str, limits: ImportLimits) -> _Parsed:
    suffix, fs, fs_path, compression = _open_event_file(url)
    with fs.open(fs_path, "rb", compression=compression) as handle:
        return _READERS[suffix](handle, url, limits)


def read_event_file(path: str | Path) -> pd.DataFrame:
    """Read a CSV, Parquet or JSON-lines file in the documented schema (checked for columns).

    ``path`` is a local path or an fsspec URL (``file://``, ``memory://``, ``s3://`` where its
    package is installed, ...). CSV and JSON lines may be gzipped (``.csv.gz``, ``.jsonl.gz``).
    Strict: a line that cannot be parsed raises ValueError naming it (``import_file`` instead
    rejects it and goes on). CSV values are text, empty fields None.
    """
    import pandas as pd

    parsed = _read(str(path), LIMITS)
    if parsed.rejects:
        bad = parsed.rejects[0]
        raise ValueError(f"{path}: {parsed.unit} {bad[parsed.unit]}: {bad['reason']}")
    return pd.DataFrame.from_records([rec for _, rec in parsed.records], columns=parsed.columns)


def default_rejects_path(path: str | Path, fallback_dir: Path) -> Path:
    """``<input>.rejects.jsonl`` beside a local input; ``fallback_dir/<name>.rejects.jsonl`` for
    an input at a remote URL (``s3://``, ``memory://``, ...)."""
    url = str(path)
    if "://" not in url or url.startswith("file://"):
        local = Path(url.removeprefix("file://"))
        return local.with_name(local.name + ".rejects.jsonl")
    return fallback_dir / f"{Path(url).name}.rejects.jsonl"


def import_file(
    store: EventStore,
    path: str | Path,
    rejects: Path,
    default_event_type: str = "view",
    limits: ImportLimits = LIMITS,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Import an event file row by row: good rows load, bad rows go to ``rejects`` with a reason.

    ``rejects`` (JSON lines, rewritten when a row is rejected, untouched otherwise) gets one
    object per bad row, in file order: ``{"line": N, "reason": ..., "raw": "<the line>"}`` for CSV
    and JSON lines (the first physical line of the record; blank lines are skipped, not counted),
    ``{"row": N, "reason": ..., "raw": {column: value}}`` for Parquet. What is a bad row is
    ``ImportLimits``'s. A file that cannot be read at all (unsupported type, missing required
    columns, not Parquet, a broken gzip stream) raises ValueError (FileNotFoundError when absent)
    and nothing is imported; so does an unwritable reject file. The good rows load in one
    transaction. Returns counts with ``read == inserted + duplicates + rejected``.
    """
    url = str(path)
    now = utc_naive(now or dt.datetime.now(dt.UTC))
    if Path(rejects).resolve() == Path(url.removeprefix("file://")).resolve():
        raise ValueError(f"{url}: the reject file must not be the input file")
    try:
        parsed = _read(url, limits)
    except FileNotFoundError:
        raise
    except (OSError, EOFError, zlib.error) as err:  # e.g. a truncated or fake gzip stream
        raise ValueError(f"{url}: cannot read the file ({err})") from err
    good, rejected = [], list(parsed.rejects)
    for number, rec in parsed.records:
        clean, problems = check_record(rec, default_event_type, limits, now)
        if clean is None:
            rejected.append(_reject(parsed.unit, number, "; ".join(problems), rec, limits))
        else:
            good.append(clean)
    rows = prepare_rows(good, default_event_type=default_event_type, now=now)
    if rejected:
        rejected.sort(key=lambda r: r[parsed.unit])
        try:
            Path(rejects).parent.mkdir(parents=True, exist_ok=True)
            with open(rejects, "w", encoding="utf-8") as out:
                out.writelines(json.dumps(r) + "\n" for r in rejected)
        except OSError as err:
            raise ValueError(f"cannot write the reject file {rejects}: {err}") from err
        log.warning("%s: %d rows rejected, reasons in %s", url, len(rejected), rejects)
    result = _summary(store, rows, store.append(rows))
    result["read"] = len(parsed.records) + len(parsed.rejects)
    result["rejected"] = len(rejected)
    result["rejects"] = str(rejects) if rejected else None
    return result
