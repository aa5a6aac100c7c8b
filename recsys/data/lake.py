"""The lake: where partitions live, how they are named, and atomic writes.

Layout under the lake root::

    staging/events/<interval>/events.parquet        collected, not yet validated
    raw/events/<interval>/events.parquet            validated: the only input of features
    quarantine/events/<interval>/events.parquet     failed validation, kept with validation.json,
                                                    or found corrupt, kept with corruption.json
    quarantine/released/<interval>-<time>/          a quarantined copy after its release (kept)
    features/snapshots/<interval>/                  interactions.parquet, manifest.json
    features/item_index.json                        the stable item index (it only grows)
    features/latest.json                            manifest of the newest snapshot

``<interval>`` is ``YYYYmmddTHHMMSSZ--YYYYmmddTHHMMSSZ`` (data interval start and end, UTC), so
partitions sort by time and re-running an interval rewrites the same files. Every events partition
has a ``manifest.json`` (row count, sha256 of the Parquet file), written last: it marks the
partition complete, and readers check the hash. A raw partition whose bytes no longer match is
moved to the quarantine by ``recsys.data.quarantine.quarantine_corrupt`` (features do, on
reading it).

The root is a local folder or any fsspec URL (``s3://bucket/lake``, ``gs://...``, ``abfs://...``,
``memory://`` in tests), read and written through ``universal_pathlib``. Credentials and endpoints
come the filesystem's own way (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``... for S3, or fsspec's
``FSSPEC_<PROTOCOL>_<OPTION>`` variables). On an object store a file is one PUT, seen whole or not
at all; a partition's manifest is still written last and removed first; folder "moves" copy with
the manifest last and delete with the manifest first; locks are lock objects created with an
exclusive (``If-None-Match``) write, which S3 and the local and memory filesystems support.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys.config import LakePath, lake_path
from recsys.data.locks import exclusive_lock, is_local, partition_lock

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
    root: LakePath

    def __post_init__(self) -> None:
        if isinstance(self.root, str):
            object.__setattr__(self, "root", lake_path(self.root))

    def partition(self, zone: str, interval: Interval) -> Path:
        return self.root / zone / "events" / interval.id

    def partitions(self, zone: str) -> list[Interval]:
        """Intervals present in a zone (``raw``, ``quarantine``, ``staging``), oldest first."""
        base = self.root / zone / "events"
        if not base.exists():
            return []
        return sorted(Interval.from_id(p.name) for p in base.iterdir() if (p / MANIFEST).exists())

    def manifest(self, zone: str, interval: Interval) -> dict[str, Any] | None:
        """The partition's manifest, or None if it was never completely written."""
        return read_json(self.partition(zone, interval) / MANIFEST)

    def folders(self, zone: str, until: dt.datetime | None = None) -> list[Interval]:
        """The intervals of every partition folder in ``zone`` (ending by ``until``), published
        or not, oldest first: what a reader must look at, under each one's lock."""
        base = self.root / zone / "events"
        out = []
        for path in base.iterdir() if base.exists() else []:
            try:
                interval = Interval.from_id(path.name)
            except ValueError:
                continue  # a lock file or another stray name
            if until is None or interval.end <= until:
                out.append(interval)
        return sorted(out)

    def published(self, zone: str, until: dt.datetime | None = None) -> Iterator[Published]:
        """Every published partition of ``zone`` (ending by ``until``), oldest first, each read
        whole under its lock (see ``read_published``)."""
        for interval in self.folders(zone, until):
            found = self.read_published(zone, interval)
            if found is not None:
                yield found

    def read_published(self, zone: str, interval: Interval) -> Published | None:
        """A partition's manifest and rows, read together under its lock: one being re-published
        is waited for, not skipped. None if it is not published.

        Raises ``IncompletePartitionError`` for a folder left with rows but no manifest (its
        publisher died mid-way) and ``CorruptPartitionError`` for one whose bytes no longer match.
        """
        directory = self.partition(zone, interval)
        with partition_lock(directory):
            manifest = read_json(directory / MANIFEST)
            if manifest is None:
                if (directory / EVENTS).exists():
                    raise IncompletePartitionError(zone, interval, directory)
                return None
            return Published(interval, manifest, self.read_events(zone, interval))

    def read_events(self, zone: str, interval: Interval) -> pd.DataFrame:
        """A published partition's rows, checked against the content hash in its manifest."""
        directory = self.partition(zone, interval)
        manifest = read_json(directory / MANIFEST)
        if manifest is None:
            raise FileNotFoundError(f"no complete {zone} partition {interval.id} at {directory}")
        digest = file_sha256(directory / EVENTS)
        if digest != manifest["sha256"]:
            expected = manifest["sha256"]
            raise CorruptPartitionError(zone, interval, directory / EVENTS, expected, digest)
        return read_parquet(directory / EVENTS)

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
        with exclusive_lock(self.root / f".{name}.lock"):
            yield


EVENTS = "events.parquet"
REPORT = "validation.json"
MANIFEST = "manifest.json"  # written last: a partition without one was never completed


@dataclass(frozen=True)
class Published:
    """A partition as published: its manifest and its rows, read together."""

    interval: Interval
    manifest: dict[str, Any]
    frame: pd.DataFrame


class IncompletePartitionError(RuntimeError):
    """A partition folder holds rows but no manifest: its publisher died mid-way."""

    def __init__(self, zone: str, interval: Interval, directory: Path) -> None:
        self.zone, self.interval = zone, interval
        super().__init__(
            f"{zone} partition {interval.id} at {directory} holds rows but no manifest: it was "
            f"left half-published; re-run the ingest of that interval (recsys ingest --start "
            f"{interval.start.isoformat()} --end {interval.end.isoformat()})"
        )


class CorruptPartitionError(RuntimeError):
    """A partition's bytes no longer match the content hash recorded when it was published."""

    def __init__(
        self, zone: str, interval: Interval, path: Path, expected: str, actual: str, note: str = ""
    ) -> None:
        self.zone, self.interval, self.path = zone, interval, path
        self.expected, self.actual, self.note = expected, actual, note
        super().__init__(
            f"{zone} partition {interval.id}: {path} does not match its manifest (sha256 {actual}, "
            f"manifest says {expected}): rewritten or damaged since published{note}"
        )

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes despite the signature
        args = (self.zone, self.interval, self.path, self.expected, self.actual, self.note)
        return type(self), args


def file_sha256(path: LakePath) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def publish(frame: pd.DataFrame, directory: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Write a partition exactly once: data to a temporary file renamed into place, then the
    manifest (row count, content hash, ``meta``) as the completion marker. A crash (or a full
    disk) before the manifest leaves a partition that readers ignore and a rerun rewrites
    identically."""
    with partition_lock(directory):
        (directory / MANIFEST).unlink(missing_ok=True)  # incomplete until the new manifest lands
        write_parquet(frame, directory / EVENTS)
        manifest = {**meta, "rows": len(frame), "sha256": file_sha256(directory / EVENTS)}
        write_json(manifest, directory / MANIFEST)
    return manifest


def unpublish(directory: LakePath) -> None:
    """Remove a partition's completion marker and data (the marker first)."""
    (directory / MANIFEST).unlink(missing_ok=True)
    (directory / EVENTS).unlink(missing_ok=True)


def _atomic(path: Path) -> tuple[int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")


def replace_durably(tmp: str | Path, path: Path) -> None:
    """Rename a written temporary file onto ``path`` so that a power cut leaves the old file or
    the new one: its bytes are fsynced before the rename, the folder's entry after it."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def write_parquet(frame: pd.DataFrame, path: LakePath) -> LakePath:
    """Write a frame so that readers see either the old file or the whole new one."""
    if not is_local(path):
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        path.write_bytes(buffer.getvalue())  # one PUT: the old object or the whole new one
        return path
    fd, tmp = _atomic(path)
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        replace_durably(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_parquet(path: LakePath) -> pd.DataFrame:
    import pandas as pd

    if is_local(path):
        return pd.read_parquet(path)
    with path.open("rb") as fh:
        return pd.read_parquet(fh)


def write_json(obj: Any, path: LakePath) -> LakePath:
    """Write JSON atomically; a failed write (a full disk) leaves no temporary file behind."""
    if not is_local(path):
        text = json.dumps(obj, indent=2, sort_keys=True, default=str)
        path.write_bytes(text.encode())
        return path
    fd, tmp = _atomic(path)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=2, sort_keys=True, default=str)
        replace_durably(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_json(path: LakePath, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default


def _files(directory: LakePath) -> list[LakePath]:
    """Every file under ``directory`` (recursive); the manifest, if any, last."""
    if not directory.exists():
        return []
    found = [p for p in directory.rglob("*") if p.is_file()]
    return sorted(found, key=lambda p: (p.name == MANIFEST and p.parent == directory, str(p)))


def move_tree(source: LakePath, target: LakePath) -> LakePath:
    """Move a partition folder. Locally one rename; on an object store each file is copied
    (the manifest last, so the copy is complete only once whole) and then deleted (the manifest
    first, so the source stops counting before it goes). A crash leaves a complete source, or a
    complete target beside an incomplete source that readers ignore."""
    if is_local(source) and is_local(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        source.rename(target)
        return target
    files = _files(source)
    for path in files:
        copy_file(path, target / path.relative_to(source).as_posix())
    for path in reversed(files):
        path.unlink(missing_ok=True)
    return target


def copy_file(source: LakePath, target: LakePath) -> None:
    if is_local(target):
        target.parent.mkdir(parents=True, exist_ok=True)
    with source.open("rb") as src, target.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def remove_tree(directory: LakePath) -> None:
    """Delete a folder and everything under it; nothing there is fine."""
    if is_local(directory):
        shutil.rmtree(directory, ignore_errors=True)
        return
    for path in reversed(_files(directory)):
        path.unlink(missing_ok=True)
