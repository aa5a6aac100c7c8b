"""Event files: read CSV / JSONL / Parquet (local or any fsspec URL), check every row against
``ImportLimits``, load the good rows into the event store and write the bad ones to a reject file
with their reason (``import_file``). A file can be fixed and sent again, so this is stricter than
the store itself, which keeps whatever it is given (``recsys.data.events.prepare_rows``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys import schema as S
from recsys.data.contract import LIMITS, ImportLimits, check_record
from recsys.data.event_readers import Item, open_records, reject_entry
from recsys.data.events import (
    EventStore,
    prepare_rows,
    utc_naive,
)

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


def default_rejects_path(path: str | Path, fallback_dir: Path) -> Path:
    """``<input>.rejects.jsonl`` beside a local input; ``fallback_dir/<name>.rejects.jsonl`` for
    an input at a remote URL (``s3://``, ``memory://``, ...)."""
    url = str(path)
    if "://" not in url or url.startswith("file://"):
        local = Path(url.removeprefix("file://"))
        return local.with_name(local.name + ".rejects.jsonl")
    return fallback_dir / f"{Path(url).name}.rejects.jsonl"


IMPORT_CHUNK = 10_000  # records checked, prepared and inserted at a time: memory stays flat


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
    ``{"row": N, "reason": ..., "raw": {column: value}}`` for Parquet. It is written to a
    temporary file beside it and renamed into place, so a symlink there is replaced, never
    followed. What is a bad row is the event contract's (``recsys.data.contract``). A file that
    cannot be read at all (unsupported type, missing required columns, not Parquet, a broken gzip
    stream, over ``ImportLimits.max_bytes`` or ``max_rows``) raises ValueError (FileNotFoundError
    when absent) and nothing is imported; so does an unwritable reject file. The file streams in
    chunks of ``IMPORT_CHUNK`` records, all in one transaction. Returns counts with ``read ==
    inserted + duplicates + rejected``.
    """
    url = str(path)
    now = utc_naive(now or dt.datetime.now(dt.UTC))
    rejects = Path(rejects)
    if rejects.resolve() == Path(url.removeprefix("file://")).resolve():
        raise ValueError(f"{url}: the reject file must not be the input file")
    try:
        rejects.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=rejects.parent, prefix=f".{rejects.name}.", suffix=".tmp")
    except OSError as err:
        raise ValueError(f"cannot write the reject file {rejects}: {err}") from err
    counts = _Counts()
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out, store.engine.begin() as conn:
            with open_records(url, limits) as stream:
                for chunk in _chunks(stream.items, IMPORT_CHUNK):
                    counts.read += len(chunk)
                    if counts.read > limits.max_rows:
                        raise ValueError(
                            f"{url}: over the {limits.max_rows} rows an import may read"
                        )
                    good = []
                    for number, rec, bad in chunk:
                        if bad is None:
                            clean, problems = check_record(rec, default_event_type, limits, now)
                            if clean is not None:
                                good.append(clean)
                                continue
                            bad = reject_entry(
                                stream.unit, number, "; ".join(problems), rec, limits
                            )
                        counts.rejected += 1
                        out.write(json.dumps(bad) + "\n")
                    rows = prepare_rows(good, default_event_type=default_event_type, now=now)
                    counts.add(rows, store.append_in(conn, rows))
        if counts.rejected:
            os.replace(tmp, rejects)  # the link itself is replaced, if one is there
            log.warning("%s: %d rows rejected, reasons in %s", url, counts.rejected, rejects)
    except FileNotFoundError:
        raise
    except (OSError, EOFError, zlib.error) as err:  # e.g. a truncated or fake gzip stream
        raise ValueError(f"{url}: cannot read the file ({err})") from err
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return counts.summary(store, rejects)


def _chunks(items: Iterator[Item], size: int) -> Iterator[list[Item]]:
    chunk: list[Item] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass
class _Counts:
    """What an import did, counted chunk by chunk."""

    read: int = 0
    inserted: int = 0
    stored: int = 0  # good rows, new or already present
    rejected: int = 0
    first: dt.datetime | None = None
    last: dt.datetime | None = None

    def add(self, rows: list[dict[str, Any]], inserted: int) -> None:
        self.inserted += inserted
        self.stored += len(rows)
        times = [r[S.INGESTED_AT] for r in rows]
        if times:
            self.first = min(times) if self.first is None else min(self.first, *times)
            self.last = max(times) if self.last is None else max(self.last, *times)

    def summary(self, store: EventStore, rejects: Path) -> dict[str, Any]:
        return {
            "read": self.read,
            "inserted": self.inserted,
            "duplicates": self.stored - self.inserted,
            "rejected": self.rejected,
            "rejects": str(rejects) if self.rejected else None,
            "first_ingested_at": self.first.isoformat() if self.first else None,
            "last_ingested_at": self.last.isoformat() if self.last else None,
            "total_in_store": store.count(),
        }
