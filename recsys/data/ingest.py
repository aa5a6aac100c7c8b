"""The ingest chain of one interval: collect -> validate -> features, and its re-run on release.

Each step is also one task of the ``recsys_ingest`` DAG; a step that ends the chain says why in
``"stopped"``, so the DAG (which skips its downstream tasks), ``recsys ingest`` and
``recsys quarantine release`` stop at the same places for the same reasons.
"""

from __future__ import annotations

import logging
from typing import Any

from recsys.config import GatePolicy, Settings
from recsys.data import collect, features, validate
from recsys.data.lake import Interval, Lake, read_json

log = logging.getLogger(__name__)

STOPPED = "stopped"  # the key of a step's result that ends the chain, with the reason


def collect_step(settings: Settings, interval: Interval) -> dict[str, Any]:
    """Copy the events ingested in ``interval`` from the event store into staging."""
    return collect.run(settings, interval)


def validate_step(
    settings: Settings,
    interval: Interval,
    gate: GatePolicy | None = None,
    accept_drift: str | None = None,
) -> dict[str, Any]:
    """Gate the staged partition (its bad rows rejected); a failing one is quarantined and stops
    the chain."""
    result = validate.run(settings, interval, gate=gate, accept_drift=accept_drift)
    if not result["success"]:
        result[STOPPED] = (
            f"partition {result['interval']} QUARANTINED ({result['summary']}); rows kept at "
            f"{result['path']}, report at {result['report']}. Downstream work stops here."
        )
    return result


def features_step(settings: Settings, interval: Interval, validated: dict[str, Any]) -> dict:
    """Build the features snapshot of ``interval``; an empty interval or an unchanged snapshot
    stops the chain (nothing new to train on)."""
    if validated["rows"] == 0:
        return {
            STOPPED: f"no events were ingested in {validated['interval']}: features are unchanged"
        }
    result = features.run(settings, interval)
    if not result["changed"]:
        result[STOPPED] = (
            f"features {result['interval']['id']} rebuilt byte-identical (version "
            f"{result['version'][:12]}): the Asset is not updated"
        )
    return result


def run(
    settings: Settings,
    interval: Interval,
    gate: GatePolicy | None = None,
    accept_drift: str | None = None,
) -> dict[str, Any]:
    """The whole chain for one interval: ``{"collected", "validation", "features"?}``; it stops
    after validation when the partition was quarantined (``"stopped"`` says why)."""
    result: dict[str, Any] = {"collected": collect_step(settings, interval)}
    result["validation"] = validate_step(settings, interval, gate, accept_drift)
    if STOPPED in result["validation"]:
        result[STOPPED] = result["validation"][STOPPED]
        return result
    if result["validation"]["rows"]:
        result["features"] = features_step(settings, interval, result["validation"])
    return result


def release(
    settings: Settings,
    interval_id: str,
    exclude_bad_rows: bool = False,
    accept_drift: str | None = None,
) -> dict[str, Any]:
    """Re-collect and re-validate a quarantined interval; publish it if it now passes, and
    rebuild the snapshots that should include it (its own and the newest).

    The repairs an operator makes with it, without touching the store or the lake:
    ``exclude_bad_rows`` rejects every row that fails a row check, however many (they are kept
    with their reasons in the partition's reject table); ``accept_drift`` (the reason, recorded)
    publishes a partition that drift alone quarantined."""
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
    gate = GatePolicy(max_bad_row_share=1.0) if exclude_bad_rows else None
    chain = run(settings, interval, gate, accept_drift)
    checked = chain["validation"]
    result: dict[str, Any] = {
        "interval": interval_id,
        "released": checked["success"],
        "validation": checked,
        "rejected_rows": checked.get("rejected_rows", 0),
    }
    if not checked["success"]:
        log.error("%s still fails validation: %s", interval_id, checked["summary"])
        return result
    rebuilt = []
    if "features" in chain:
        rebuilt.append(chain["features"]["interval"]["id"])
        latest = read_json(lake.latest_path)
        if latest and latest["interval"]["id"] != interval.id:
            newest = Interval.from_id(latest["interval"]["id"])
            rebuilt.append(features.run(settings, newest)["interval"]["id"])
    result["features_rebuilt"] = rebuilt
    log.info("released %s; rebuilt features %s", interval_id, rebuilt)
    return result
