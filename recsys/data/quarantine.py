"""The quarantine: what the gate stopped, why, and where its rows are.

Two things put a partition here: the validation gate (``recsys.data.validate``), and a validated raw
partition found corrupt later, its bytes no longer matching the hash in its manifest
(``quarantine_corrupt``, called by the features build that read it). ``recsys.data.ingest.release``
takes a partition out again after a fix: it re-runs the whole ingest chain on it.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from recsys.config import LakePath, Settings
from recsys.data.lake import (
    EVENTS,
    MANIFEST,
    REPORT,
    CorruptPartitionError,
    Lake,
    file_sha256,
    move_tree,
    read_json,
    write_json,
)
from recsys.data.locks import partition_lock

log = logging.getLogger(__name__)

CORRUPTION = "corruption.json"  # why a validated partition was quarantined: the two hashes


def corruption_record(err: CorruptPartitionError, detected_by: str) -> dict[str, Any]:
    """The reason file of a corrupt partition: where, both hashes, when and by whom found."""
    return {
        "interval": err.interval.as_dict(),
        "zone": err.zone,
        "path": str(err.path),
        "manifest_sha256": err.expected,
        "actual_sha256": err.actual,
        "detected_at": dt.datetime.now(dt.UTC).isoformat(),
        "detected_by": detected_by,
        "summary": (
            f"corrupt since published: sha256 {err.actual} does not match the manifest's "
            f"{err.expected}"
        ),
        "repair": f"recsys quarantine release {err.interval.id}  (re-collects it from the store)",
    }


def quarantine_corrupt(lake: Lake, err: CorruptPartitionError, detected_by: str) -> LakePath | None:
    """Move the corrupt raw partition of ``err`` into the quarantine with ``corruption.json``.

    Under the partition's lock the corruption is confirmed first: a partition republished since it
    was read is left alone (returns None; read it again). Its manifest is rewritten in place
    (validation failed: the content hash), then the folder is renamed: a crash at any step leaves
    a partition that is still found corrupt and quarantined by the next reader. Returns the
    quarantine folder.
    """
    source = lake.partition(err.zone, err.interval)
    with partition_lock(source):
        manifest = read_json(source / MANIFEST)
        if (
            manifest is None
            or manifest.get("sha256") != err.expected
            or not (source / EVENTS).exists()
            or file_sha256(source / EVENTS) == err.expected
        ):
            log.warning("%s partition %s was rewritten while read: not quarantined", err.zone,
                        err.interval.id)  # fmt: skip
            return None
        return _move_to_quarantine(lake, err, detected_by, manifest)


def _move_to_quarantine(
    lake: Lake, err: CorruptPartitionError, detected_by: str, manifest: dict[str, Any]
) -> LakePath:
    source = lake.partition(err.zone, err.interval)
    target = lake.partition("quarantine", err.interval)
    record = corruption_record(err, detected_by)
    published = manifest.get("validation", {})
    write_json(record, source / CORRUPTION)
    write_json(
        {
            **manifest,
            "validation": {
                "success": False,
                "summary": record["summary"],
                "statistics": published.get("statistics", {}),
                "failures": [
                    {
                        "expectation": "content hash matches the manifest",
                        "column": None,
                        "unexpected_count": None,
                        "sample": [],
                        "observed": err.actual,
                    }
                ],
                "suite": "lake manifest",
                "data_docs": None,
            },
            "published_validation": published,
            "corruption": {**record, "report": str(target / CORRUPTION)},
        },
        source / MANIFEST,
    )
    if target.exists():  # an older quarantined copy of this interval is kept, not overwritten
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        move_tree(target, lake.root / "quarantine" / "released" / f"{err.interval.id}-{stamp}")
    move_tree(source, target)
    log.error(
        "partition %s QUARANTINED at %s: %s was corrupt (sha256 %s, manifest says %s); "
        "repair: recsys quarantine release %s",
        err.interval.id,
        target,
        err.path,
        err.actual,
        err.expected,
        err.interval.id,
    )
    return target


def list_quarantined(settings: Settings) -> list[dict[str, Any]]:
    """Every quarantined partition: interval, rows, why, and where its rows and report are."""
    lake = Lake(settings.lake_root)
    out = []
    for interval in lake.partitions("quarantine"):
        manifest = lake.manifest("quarantine", interval) or {}
        directory = lake.partition("quarantine", interval)
        validation = manifest.get("validation", {})
        out.append(
            {
                "interval": interval.id,
                "rows": manifest.get("rows"),
                "summary": validation.get("summary", ""),
                "failures": validation.get("failures", []),
                "path": str(directory / EVENTS),
                "report": manifest.get("corruption", {}).get("report") or str(directory / REPORT),
                "data_docs": validation.get("data_docs"),
            }
        )
    return out
