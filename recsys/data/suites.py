"""The Great Expectations suites (``expectations/*.json``): loading one, filled with the event
contract's values, and running it on an in-memory frame."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys.data import contract
from recsys.data.lake import Interval

if TYPE_CHECKING:
    import pandas as pd

ENV_EXPECTATIONS = "RECSYS_EXPECTATIONS_DIR"

DOCS_SITE = "recsys"

ROW_LEVEL = "row"


def expectations_dir() -> Path:
    default = Path(__file__).resolve().parents[2] / "expectations"
    return Path(os.environ.get(ENV_EXPECTATIONS, default))


def load_suite(name: str) -> dict[str, Any]:
    """The suite ``expectations/<name>.json`` as a dict (reviewed like code, loaded as data)."""
    path = expectations_dir() / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"expectation suite {name!r} not found at {path}")
    return _fill_contract(json.loads(path.read_text()), contract.suite_values())


def _fill_contract(value: Any, values: dict[str, Any]) -> Any:
    """``value`` with every ``{"$CONTRACT": name}`` replaced by the event contract's value."""
    if isinstance(value, dict):
        if set(value) == {"$CONTRACT"}:
            return values[value["$CONTRACT"]]
        return {k: _fill_contract(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill_contract(v, values) for v in value]
    return value


def suite_params(interval: Interval) -> dict[str, Any]:
    """The raw-events suite's ``$PARAMETER`` values for ``interval``: an event may be at most the
    contract's clock skew after the interval in which it arrived."""
    import pandas as pd

    return {
        "interval_start": pd.Timestamp(interval.start, tz="UTC"),
        "interval_end": pd.Timestamp(interval.end, tz="UTC"),
        "event_time_max": pd.Timestamp(interval.end + contract.CLOCK_SKEW, tz="UTC"),
        "earliest": pd.Timestamp(contract.EARLIEST, tz="UTC"),
    }


@dataclass(frozen=True)
class Report:
    success: bool
    failures: list[dict[str, Any]]  # one entry per failed expectation: type, column, counts, sample
    statistics: dict[str, Any]
    raw: dict[str, Any]  # the full GX validation result
    docs: str | None = None  # the Data Docs page of this validation, when rendered
    bad_rows: dict[Any, list[str]] = field(default_factory=dict)  # index -> failed row checks

    @property
    def partition_failures(self) -> list[dict[str, Any]]:
        """The failed expectations that judge the partition as a whole."""
        return [f for f in self.failures if f.get("level") != ROW_LEVEL]

    def summary(self) -> str:
        if self.success:
            return f"all {self.statistics.get('evaluated_expectations')} expectations passed"
        parts = []
        for f in self.failures:
            count = f.get("unexpected_count")
            what = f"{count} bad rows" if count is not None else f"observed {f.get('observed')}"
            parts.append(f"{f['expectation']}({f.get('column') or ''}): {what}")
        return "failed " + "; ".join(parts)


def validate_frame(
    frame: pd.DataFrame,
    suite: dict[str, Any],
    params: dict[str, Any],
    docs_dir: Path | None = None,
    find_rows: bool = False,
) -> Report:
    """Run a GX suite on an in-memory frame. ``params`` fill the suite's ``$PARAMETER`` values.

    With ``docs_dir``, GX also renders its Data Docs there (the page is ``Report.docs``). With
    ``find_rows``, ``Report.bad_rows`` names the rows (by index) that failed a row-level
    expectation, and why.
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
            result_format="COMPLETE" if find_rows else "SUMMARY",
        )
    )
    outcome = checkpoint.run(batch_parameters={"dataframe": frame}, expectation_parameters=params)
    (result,) = outcome.run_results.values()
    raw = result.to_json_dict()
    failures, bad_rows = [], {}
    for r in raw["results"]:
        config, found = r["expectation_config"], r["result"]
        rows = found.pop("unexpected_index_list", None) or []  # COMPLETE lists: not kept
        for key in ("unexpected_list", "unexpected_index_query"):
            found.pop(key, None)
        if r["success"]:
            continue
        level = (config.get("meta") or {}).get("level")
        column = config["kwargs"].get("column")
        failures.append(
            {
                "expectation": config["type"],
                "column": column,
                "level": level,
                "unexpected_count": found.get("unexpected_count"),
                "sample": found.get("partial_unexpected_list", [])[:5],
                "observed": found.get("observed_value"),
            }
        )
        if level == ROW_LEVEL:
            for index in rows:
                bad_rows.setdefault(index, []).append(f"{config['type']}({column})")
    pages = sorted((docs_dir / "validations").rglob("*.html")) if docs_dir else []
    docs = str(pages[-1]) if pages else None
    return Report(bool(raw["success"]), failures, raw.get("statistics", {}), raw, docs, bad_rows)
