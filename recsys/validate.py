"""The validation gate: a Great Expectations suite decides whether a partition may be trained on.

A passing partition moves from ``staging/`` to ``raw/``. A failing one moves to ``quarantine/``
with its validation report beside it; its rows are kept (never deleted) and downstream work stops.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys import schema as S
from recsys.config import Settings
from recsys.lake import EVENTS, REPORT, Interval, Lake, write_json, write_parquet

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

ENV_EXPECTATIONS = "RECSYS_EXPECTATIONS_DIR"
EVENT_TS = "event_ts"  # event_time parsed to a UTC timestamp (NaT when unparseable)


def expectations_dir() -> Path:
    default = Path(__file__).resolve().parents[1] / "expectations"
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

    def summary(self) -> str:
        if self.success:
            return f"all {self.statistics.get('evaluated_expectations')} expectations passed"
        parts = [
            f"{f['expectation']}({f.get('column') or ''}): {f.get('unexpected_count')} bad rows"
            for f in self.failures
        ]
        return "failed " + "; ".join(parts)


def parse_event_times(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``event_ts``: the raw ``event_time`` text parsed as UTC (NaT where unparseable)."""
    import pandas as pd

    out = frame.copy()
    out[EVENT_TS] = pd.to_datetime(out[S.EVENT_TIME], utc=True, errors="coerce", format="ISO8601")
    return out


def validate_frame(frame: pd.DataFrame, suite: dict[str, Any], params: dict[str, Any]) -> Report:
    """Run a GX suite on an in-memory frame. ``params`` fill the suite's ``$PARAMETER`` values."""
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    asset = context.data_sources.add_pandas("lake").add_dataframe_asset("partition")
    batch = asset.add_batch_definition_whole_dataframe("whole").get_batch(
        batch_parameters={"dataframe": frame}
    )
    result = batch.validate(gx.ExpectationSuite(**suite), expectation_parameters=params)
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
    return Report(bool(raw["success"]), failures, raw.get("statistics", {}), raw)


def run(settings: Settings, interval: Interval) -> dict[str, Any]:
    """Validate the staged partition of ``interval`` and move it to ``raw/`` or ``quarantine/``."""
    import pandas as pd

    lake = Lake(settings.lake_root)
    staged = lake.partition("staging", interval) / EVENTS
    if not staged.exists():
        raise FileNotFoundError(
            f"no collected partition for {interval.id} at {staged}; collect first"
        )
    frame = parse_event_times(pd.read_parquet(staged))
    params = {
        "interval_start": pd.Timestamp(interval.start, tz="UTC"),
        "interval_end": pd.Timestamp(interval.end, tz="UTC"),
    }
    report = validate_frame(frame, load_suite("raw_events"), params)
    zone = "raw" if report.success else "quarantine"
    target = lake.partition(zone, interval)
    write_json(
        {
            "interval": interval.as_dict(),
            "success": report.success,
            "failures": report.failures,
            "result": report.raw,
        },
        target / REPORT,
    )
    write_parquet(frame, target / EVENTS)
    if report.success:
        # A partition that now passes replaces any earlier quarantined copy's role; the copy and
        # its report stay in quarantine/ for the record.
        log.info("partition %s passed: %s", interval.id, report.summary())
    else:
        stale = lake.partition("raw", interval) / EVENTS
        if stale.exists():  # a re-run found bad rows: the partition may no longer be trained on
            stale.unlink()
        log.error("partition %s QUARANTINED at %s: %s", interval.id, target, report.summary())
    staged.unlink()
    return {
        "interval": interval.id,
        "success": report.success,
        "rows": len(frame),
        "path": str(target / EVENTS),
        "report": str(target / REPORT),
        "summary": report.summary(),
    }
