"""The lake: where partitions live, how they are named, and atomic writes.

Layout under the lake root::

    staging/events/<interval>/events.parquet        collected, not yet validated
    raw/events/<interval>/events.parquet            validated: the only input of features
    quarantine/events/<interval>/events.parquet     failed validation, kept with validation.json
    features/snapshots/<interval>/                  interactions.parquet, manifest.json
    features/item_index.json                        the stable item index (it only grows)
    features/latest.json                            manifest of the newest snapshot

``<interval>`` is ``YYYYmmddTHHMMSSZ--YYYYmmddTHHMMSSZ`` (data interval start and end, UTC), so
partitions sort by time and re-running an interval rewrites the same files.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

_FMT = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True, order=True)
class Interval:
    """A half-open data interval ``[start, end)`` in naive UTC."""

    start: dt.datetime
    end: dt.datetime

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(f"interval end {self.end} must be after its start {self.start}")

    @classmethod
    def parse(cls, start: str | dt.datetime, end: str | dt.datetime) -> Interval:
        """From ISO-8601 strings or datetimes (aware ones are converted to UTC)."""
        return cls(_to_utc(start), _to_utc(end))

    @classmethod
    def from_id(cls, ident: str) -> Interval:
        start, _, end = ident.partition("--")
        return cls(dt.datetime.strptime(start, _FMT), dt.datetime.strptime(end, _FMT))

    @property
    def id(self) -> str:
        return f"{self.start.strftime(_FMT)}--{self.end.strftime(_FMT)}"

    def as_dict(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "id": self.id}


def _to_utc(value: str | dt.datetime) -> dt.datetime:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as err:
            raise ValueError(f"not an ISO-8601 date or time: {value!r}") from err
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


@dataclass(frozen=True)
class Lake:
    root: Path

    def partition(self, zone: str, interval: Interval) -> Path:
        return self.root / zone / "events" / interval.id

    def partitions(self, zone: str) -> list[Interval]:
        """Intervals present in a zone (``raw``, ``quarantine``, ``staging``), oldest first."""
        base = self.root / zone / "events"
        if not base.exists():
            return []
        return sorted(Interval.from_id(p.name) for p in base.iterdir() if (p / EVENTS).exists())

    def snapshot(self, interval: Interval) -> Path:
        return self.root / "features" / "snapshots" / interval.id

    @property
    def item_index_path(self) -> Path:
        return self.root / "features" / "item_index.json"

    @property
    def latest_path(self) -> Path:
        return self.root / "features" / "latest.json"

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """An exclusive file lock: concurrent backfill runs don't interleave read-modify-write."""
        path = self.root / f".{name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


EVENTS = "events.parquet"
REPORT = "validation.json"


def _atomic(path: Path) -> tuple[int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")


def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    """Write a frame so that readers see either the old file or the whole new one."""
    fd, tmp = _atomic(path)
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_json(obj: Any, path: Path) -> Path:
    fd, tmp = _atomic(path)
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, default=str)
    os.replace(tmp, path)
    return path


def read_json(path: Path, default: Any = None) -> Any:
    if not path.exists():
        return default
    return json.loads(path.read_text())
