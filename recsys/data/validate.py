"""The validation gate: a Great Expectations suite decides what of a partition may be trained on.

Rows that fail a row-level expectation (``"meta": {"level": "row"}`` in the suite) go to the
partition's reject table (``rejects.parquet``, each with its reasons) and the rest moves from
``staging/`` to ``raw/``. A partition that fails as a whole (its schema, drift, or more bad rows
than ``GatePolicy.max_bad_row_share``) moves to ``quarantine/`` with its validation report beside
it; its rows are kept (never deleted) and downstream work stops.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys import schema as S
from recsys.config import DriftPolicy, GatePolicy, LakePath, Settings
from recsys.data import drift
from recsys.data.lake import (
    EVENTS,
    MANIFEST,
    REPORT,
    Interval,
    Lake,
    move_tree,
    publish,
    remove_tree,
    unpublish,
    write_json,
    write_parquet,
)
from recsys.data.locks import is_local
from recsys.data.suites import Report, load_suite, suite_params, validate_frame

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

EVENT_TS = "event_ts"  # event_time parsed to a UTC timestamp (NaT when unparseable)
DATA_DOCS = "data_docs"  # folder of a partition's rendered Great Expectations report
REJECTS = "rejects.parquet"  # rows the gate rejected, with a ``reason`` column
REASON = "reason"


def parse_event_times(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``event_ts``: the raw ``event_time`` text parsed as UTC (NaT where unparseable)."""
    import pandas as pd

    out = frame.copy()
    out[EVENT_TS] = pd.to_datetime(out[S.EVENT_TIME], utc=True, errors="coerce", format="ISO8601")
    return out


def _result(interval: Interval, zone: str, manifest: dict[str, Any], lake: Lake) -> dict[str, Any]:
    directory = lake.partition(zone, interval)
    validation = manifest["validation"]
    return {
        "interval": interval.id,
        "success": validation["success"],
        "rows": manifest["rows"],
        "sha256": manifest["sha256"],
        "path": str(directory / EVENTS),
        "report": str(directory / REPORT),
        "summary": validation["summary"],
        "statistics": validation["statistics"],
        "data_docs": validation.get("data_docs"),
        "rejected_rows": validation.get("rejected_rows", 0),
        "rejects": manifest.get("rejects"),
    }


def archive_quarantined(lake: Lake, interval: Interval) -> LakePath | None:
    """Move a quarantined copy aside (kept, never deleted) once its interval is released."""
    directory = lake.partition("quarantine", interval)
    if not (directory / MANIFEST).exists():
        return None
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return move_tree(directory, lake.root / "quarantine" / "released" / f"{interval.id}-{stamp}")


@contextlib.contextmanager
def _render_folder(staging_docs: LakePath) -> Iterator[Path]:
    """Where GX renders Data Docs (it writes local files): the staging partition's folder on a
    local lake, a temporary folder (uploaded afterwards) on a remote one."""
    if is_local(staging_docs):
        yield staging_docs
        return
    with tempfile.TemporaryDirectory(prefix="recsys-data-docs-") as tmp:
        yield Path(tmp)


def _place_docs(page: str | None, rendered: Path, target: LakePath) -> str | None:
    """Move rendered Data Docs beside the partition's rows; the page's new address."""
    remove_tree(target)
    if rendered.exists():
        move_tree(rendered, target)  # the report travels with its rows
    return page.replace(str(rendered), str(target)) if page else None


def check_drift(
    lake: Lake, interval: Interval, frame: pd.DataFrame, policy: DriftPolicy
) -> list[drift.Finding]:
    """Compare a partition with the validated partitions that end before it starts."""
    earlier = [iv for iv in lake.partitions("raw") if iv.end <= interval.start]
    if len(earlier) < policy.min_history:
        return []
    history, users, items = [], set(), set()
    for iv in earlier:
        manifest = lake.manifest("raw", iv) or {}
        past = lake.read_events("raw", iv)
        history.append(manifest.get("stats") or drift.stats(past))
        users.update(past[S.USER_ID].dropna())
        items.update(past[S.ITEM_ID].dropna())
    return drift.check(frame, history, users, items, policy)


@dataclass
class Outcome:
    """The gate's decision on one partition: what is published where, and why."""

    success: bool  # published to raw/ (else quarantined whole)
    published: pd.DataFrame  # the rows of the published or quarantined partition
    rejects: pd.DataFrame | None  # rows rejected one by one, with their ``reason``
    findings: list[drift.Finding]
    summary: str


def judge(
    lake: Lake,
    interval: Interval,
    frame: pd.DataFrame,
    report: Report,
    policy: DriftPolicy,
    gate: GatePolicy,
    accept_drift: str | None = None,
) -> Outcome:
    """Rows failing row-level expectations are rejected; the partition is quarantined whole for a
    partition-level failure, more bad rows than ``gate`` allows, or drift that quarantines (unless
    an operator accepted it, ``accept_drift`` giving the reason)."""
    bad, n = report.bad_rows, len(frame)
    share = len(bad) / max(n, 1)
    too_many = share > gate.max_bad_row_share
    whole = bool(report.partition_failures) or too_many
    clean = frame.drop(index=list(bad)) if bad else frame
    findings = [] if whole else check_drift(lake, interval, clean, policy)
    drift_stops = any(f.quarantines for f in findings) and not accept_drift
    success = not whole and not drift_stops
    summary = report.summary()
    if too_many:
        summary += (
            f"; {len(bad)} of {n} rows bad ({share:.2%}), over the {gate.max_bad_row_share:.2%} "
            "a partition may reject"
        )
    elif bad and success:
        summary = f"{len(bad)} of {n} rows rejected, the rest published: {summary}"
    breaches = [f for f in findings if f.breached]
    if breaches:
        summary += "; drift: " + "; ".join(f.describe() for f in breaches)
    if accept_drift and any(f.quarantines for f in findings):
        summary += f"; drift accepted by operator: {accept_drift}"
    rejects = None
    if success and bad:
        rejects = frame.loc[list(bad)].copy()
        rejects[REASON] = ["; ".join(bad[i]) for i in rejects.index]
    return Outcome(success, clean if success else frame, rejects, findings, summary)


def run(
    settings: Settings,
    interval: Interval,
    policy: DriftPolicy | None = None,
    gate: GatePolicy | None = None,
    accept_drift: str | None = None,
) -> dict[str, Any]:
    """Validate the staged partition of ``interval``: publish its good rows to ``raw/`` (its bad
    ones to the reject table beside them), or move it whole to ``quarantine/`` (see ``judge``).

    Idempotent: a retry after the partition was already moved returns the recorded outcome.
    """
    lake = Lake(settings.lake_root)
    staged = lake.manifest("staging", interval)
    if staged is None:
        for zone in ("raw", "quarantine"):
            done = lake.manifest(zone, interval)
            if done is not None and "validation" in done:
                return _result(interval, zone, done, lake)
        raise FileNotFoundError(
            f"no collected partition for {interval.id} under {lake.root}; collect first"
        )
    frame = parse_event_times(lake.read_events("staging", interval))
    staging_docs = lake.partition("staging", interval) / DATA_DOCS
    with _render_folder(staging_docs) as render_docs:
        report = validate_frame(
            frame, load_suite("raw_events"), suite_params(interval), render_docs, find_rows=True
        )
        outcome = judge(
            lake, interval, frame, report, policy or DriftPolicy(), gate or GatePolicy(),
            accept_drift,
        )  # fmt: skip
        target = lake.partition("raw" if outcome.success else "quarantine", interval)
        docs = _place_docs(report.docs, render_docs, target / DATA_DOCS)
    for finding in outcome.findings:
        if finding.breached:
            log.warning("partition %s drift: %s", interval.id, finding.describe())
    zone = "raw" if outcome.success else "quarantine"
    rejected = 0 if outcome.rejects is None else len(outcome.rejects)
    validation = {
        "success": outcome.success,
        "summary": outcome.summary,
        "statistics": report.statistics,
        "failures": report.failures,
        "drift": [f.as_dict() for f in outcome.findings],
        "suite": "raw_events",
        "data_docs": docs,
        "rejected_rows": rejected,
        "accepted_drift": accept_drift,
    }
    write_json(
        {"interval": interval.as_dict(), **validation, "result": report.raw}, target / REPORT
    )
    if outcome.rejects is not None:
        write_parquet(outcome.rejects, target / REJECTS)
    else:
        (target / REJECTS).unlink(missing_ok=True)
    manifest = publish(
        outcome.published,
        target,
        {
            "interval": interval.as_dict(),
            "duplicates_dropped": staged.get("duplicates_dropped", 0),
            "writers": staged.get("writers", {}),  # events per API key (lineage)
            "validation": validation,
            "rejects": str(target / REJECTS) if rejected else None,
            "stats": drift.stats(outcome.published),
        },
    )
    if outcome.success:
        released = archive_quarantined(lake, interval)
        if released:
            log.info("an earlier quarantined copy of %s was kept at %s", interval.id, released)
        log.info("partition %s passed: %s (Data Docs: %s)", interval.id, outcome.summary, docs)
        if rejected:
            log.warning("partition %s: %d rows rejected, kept with their reasons at %s",
                        interval.id, rejected, target / REJECTS)  # fmt: skip
    else:
        unpublish(lake.partition("raw", interval))  # a re-run found bad rows: not trainable now
        log.error(
            "partition %s QUARANTINED at %s: %s (Data Docs: %s)",
            interval.id, target, outcome.summary, docs,
        )  # fmt: skip
    unpublish(lake.partition("staging", interval))
    return _result(interval, zone, manifest, lake)
