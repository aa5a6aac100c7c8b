"""Operating the quarantine: see what was stopped and why, and release a partition after a fix.

A release re-collects the interval from the event store (where the fix was made) and runs the full
validation gate again: nothing skips the gate. The quarantined copy is kept under
``quarantine/released/``, and the features snapshots that should include the partition are rebuilt.
"""

from __future__ import annotations

import logging
from typing import Any

from recsys.config import Settings
from recsys.lake import EVENTS, REPORT, Interval, Lake, read_json

log = logging.getLogger(__name__)


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
                "report": str(directory / REPORT),
                "data_docs": validation.get("data_docs"),
            }
        )
    return out


def release(settings: Settings, interval_id: str) -> dict[str, Any]:
    """Re-collect and re-validate a quarantined interval; publish it if it now passes."""
    from recsys import collect, features, validate

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
