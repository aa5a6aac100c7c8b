"""The validation gate: a Great Expectations suite decides whether a partition may be trained on.

A passing partition moves from ``staging/`` to ``raw/``. A failing one moves to ``quarantine/``
with its validation report beside it; its rows are kept (never deleted) and downstream work stops.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys import schema as S
from recsys.config import DriftPolicy, LakePath, Settings
from recsys.data import drift
from recsys.data.lake import (
    EVENTS,
    MANIFEST,
    REPORT,
    Interval,
    Lake,
    is_local,
    move_tree,
    publish,
    remove_tree,
    unpublish,
    write_json,
)

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

ENV_EXPECTATIONS = "RECSYS_EXPECTATIONS_DIR"
EVENT_TS = "event_ts"  # event_time parsed to a UTC timestamp (NaT when unparseable)
DOCS_SITE = "recsys"
DATA_DOCS = "data_docs"  # folder of a partition's rendered Great Expectations report


def expectations_dir() -> Path:
    default = Path(__file__).resolve().parents[2] / "expectations"
    return Path(os.environ.get(ENV_EXPECTATIONS, default))


def load_suite(name: str) -> dict[str, Any]:
    """The suite ``expectations/<name>.json`` as a dict (reviewed like code, loaded as data)."""
    path = expectations_dir() / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"expectation suite {name!r} not found at {path}")
    return json.loads(path.read_text())


@dataclass(frozen=True)
class Report:
    success: bool
    failures: list[dict[str, Any]]  # one entry per failed expectation: type, column, counts, sample
    statistics: dict[str, Any]
    raw: dict[str, Any]  # the full GX validation result
    docs: str | None = None  # the Data Docs page of this validation, when rendered

    def summary(self) -> str:
        if self.success:
            return f"all {self.statistics.get('evaluated_expectations')} expectations passed"
        parts = []
        for f in self.failures:
            count = f.get("unexpected_count")
            what = f"{count} bad rows" if count is not None else f"observed {f.get('observed')}"
            parts.append(f"{f['expectation']}({f.get('column') or ''}): {what}")
        return "failed " + "; ".join(parts)


def parse_event_times(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``event_ts``: the raw ``event_time`` text parsed as UTC (NaT where unparseable)."""
    import pandas as pd

    out = frame.copy()
    out[EVENT_TS] = pd.to_datetime(out[S.EVENT_TIME], utc=True, errors="coerce", format="ISO8601")
    return out


def validate_frame(
    frame: pd.DataFrame,
    suite: dict[str, Any],
    params: dict[str, Any],
    docs_dir: Path | None = None,
) -> Report:
    """Run a GX suite on an in-memory frame. ``params`` fill the suite's ``$PARAMETER`` values.

    With ``docs_dir``, GX also renders its Data Docs there (the page is ``Report.docs``).
    """
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    actions = []
    if docs_dir is not None:
        shutil.rmtree(docs_dir, ignore_errors=True)  # one page: this validation
        context.add_data_docs_site(
            site_name=DOCS_SITE,
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
        actions.append(gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=[DOCS_SITE]))
    asset = context.data_sources.add_pandas("lake").add_dataframe_asset("partition")
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(
            name=suite["name"],
            data=asset.add_batch_definition_whole_dataframe("whole"),
            suite=context.suites.add(gx.ExpectationSuite(**suite)),
        )
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name="gate",
            validation_definitions=[definition],
            actions=actions,
            result_format="SUMMARY",
        )
    )
    outcome = checkpoint.run(batch_parameters={"dataframe": frame}, expectation_parameters=params)
    (result,) = outcome.run_results.values()
    raw = result.to_json_dict()
    failures = [
        {
            "expectation": r["expectation_config"]["type"],
            "column": r["expectation_config"]["kwargs"].get("column"),
            "unexpected_count": r["result"].get("unexpected_count"),
            "sample": r["result"].get("partial_unexpected_list", [])[:5],
            "observed": r["result"].get("observed_value"),
        }
        for r in raw["results"]
        if not r["success"]
    ]
    pages = sorted((docs_dir / "validations").rglob("*.html")) if docs_dir else []
    docs = str(pages[-1]) if pages else None
    return Report(bool(raw["success"]), failures, raw.get("statistics", {}), raw, docs)


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


def run(
    settings: Settings, interval: Interval, policy: DriftPolicy | None = None
) -> dict[str, Any]:
    """Validate the staged partition of ``interval`` and move it to ``raw/`` or ``quarantine/``.

    Idempotent: a retry after the partition was already moved returns the recorded outcome.
    """
    import pandas as pd

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
    params = {
        "interval_start": pd.Timestamp(interval.start, tz="UTC"),
        "interval_end": pd.Timestamp(interval.end, tz="UTC"),
    }
    staging_docs = lake.partition("staging", interval) / DATA_DOCS
    with _render_folder(staging_docs) as render_docs:
        report = validate_frame(frame, load_suite("raw_events"), params, docs_dir=render_docs)
        findings = (
            check_drift(lake, interval, frame, policy or DriftPolicy()) if report.success else []
        )
        success = report.success and not any(f.quarantines for f in findings)
        target = lake.partition("raw" if success else "quarantine", interval)
        docs = _place_docs(report.docs, render_docs, target / DATA_DOCS)
    breaches = [f for f in findings if f.breached]
    for finding in breaches:
        log.warning("partition %s drift: %s", interval.id, finding.describe())
    summary = report.summary()
    if breaches:
        summary += "; drift: " + "; ".join(f.describe() for f in breaches)
    zone = "raw" if success else "quarantine"
    validation = {
        "success": success,
        "summary": summary,
        "statistics": report.statistics,
        "failures": report.failures,
        "drift": [f.as_dict() for f in findings],
        "suite": "raw_events",
        "data_docs": docs,
    }
    write_json(
        {"interval": interval.as_dict(), **validation, "result": report.raw}, target / REPORT
    )
    manifest = publish(
        frame,
        target,
        {
            "interval": interval.as_dict(),
            "duplicates_dropped": staged.get("duplicates_dropped", 0),
            "validation": validation,
            "stats": drift.stats(frame),
        },
    )
    if success:
        released = archive_quarantined(lake, interval)
        if released:
            log.info("an earlier quarantined copy of %s was kept at %s", interval.id, released)
        log.info("partition %s passed: %s (Data Docs: %s)", interval.id, summary, docs)
    else:
        unpublish(lake.partition("raw", interval))  # a re-run found bad rows: not trainable now
        log.error(
            "partition %s QUARANTINED at %s: %s (Data Docs: %s)", interval.id, target, summary, docs
        )
    unpublish(lake.partition("staging", interval))
    return _result(interval, zone, manifest, lake)
