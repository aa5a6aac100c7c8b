"""The ingest chain of one interval: collect -> validate -> features, and its re-run on release."""

from __future__ import annotations

import logging
from typing import Any

from recsys.config import Settings
from recsys.data import collect, features, validate
from recsys.data.lake import Interval, Lake, read_json

log = logging.getLogger(__name__)


def release(settings: Settings, interval_id: str) -> dict[str, Any]:
    """Re-collect and re-validate a quarantined interval; publish it if it now passes."""
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
