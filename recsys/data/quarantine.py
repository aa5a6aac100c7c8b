"""Operating the quarantine: see what was stopped and why, and release a partition after a fix.

Two things put a partition here: the validation gate (``recsys.data.validate``), and a validated raw
partition found corrupt later, its bytes no longer matching the hash in its manifest
(``quarantine_corrupt``, called by the features build that read it). A release re-collects the
interval from the event store (where the fix was made, or simply the intact source of a corrupt
copy) and runs the full validation gate again: nothing skips the gate. The quarantined copy is kept
under ``quarantine/released/``, and the features snapshots that should include the partition are
rebuilt.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from recsys.config import Settings
from recsys.data.lake import (
    EVENTS,
    MANIFEST,
    REPORT,
    CorruptPartitionError,
    Interval,
    Lake,
    LakePath,
    file_sha256,
    move_tree,
    partition_lock,
    read_json,
    write_json,
)

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


def release(settings: Settings, interval_id: str) -> dict[str, Any]:
    """Re-collect and re-validate a quarantined interval; publish it if it now passes."""
    from recsys.data import collect, features, validate

    lake = Lake(settings.lake_root)
    try:
        interval = Interval.from_id(interval_id)
    except ValueError as err:
        raise ValueError(
            f"{interval_id!r} is not a partition id (see `recsys quarantine list`)"
        ) from err
    if lake.manifest("quarantine", interval) is None:
        raise ValueError(
            f"{interval_id} is not quarantined; `recsys quarantine list` shows what is"
        )
    collect.run(settings, interval)
    checked = validate.run(settings, interval)
    result: dict[str, Any] = {
        "interval": interval_id,
        "released": checked["success"],
        "validation": checked,
    }
    if not checked["success"]:
        log.error("%s still fails validation: %s", interval_id, checked["summary"])
        return result
    rebuilt = []
    if checked["rows"]:
        rebuilt.append(features.run(settings, interval)["interval"]["id"])
        latest = read_json(lake.latest_path)
        if latest and latest["interval"]["id"] != interval.id:
            newest = Interval.from_id(latest["interval"]["id"])
            rebuilt.append(features.run(settings, newest)["interval"]["id"])
    result["features_rebuilt"] = rebuilt
    log.info("released %s; rebuilt features %s", interval_id, rebuilt)
    return result
