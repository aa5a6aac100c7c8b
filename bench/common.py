"""What the benchmarks share: logging one benchmark run to MLflow.

Each benchmark logs to the experiment ``bench-<name>`` of the tracking server named by
``recsys.config.Settings.from_env()`` (``MLFLOW_TRACKING_URI``, or ``sqlite:///$RECSYS_HOME/...``),
so results sit next to the pipeline's runs: params, summary metrics, tables (JSON to reload and
markdown to read) and learning-curve plots.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

SCHEMES = ("file:", "sqlite:", "postgresql", "mysql", "mssql", "http:", "https:", "databricks")


def absolute_uri(uri: str) -> str:
    """``uri`` with a relative local path made absolute, so the cwd of the bench does not matter.

    A plain path becomes a ``file://`` URI; ``sqlite:///relative.db`` becomes
    ``sqlite:////abs/relative.db``; anything else (servers, absolute paths) is returned as is.
    """
    if not uri.startswith(SCHEMES):
        return Path(uri).expanduser().resolve().as_uri()
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


def device_label(device: str) -> str:
    """``device`` as a benchmark reports it: a GPU with its name, ``cuda (NVIDIA H200)``."""
    if not device.startswith("cuda"):
        return device
    import torch

    return f"{device} ({torch.cuda.get_device_name(device)})"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of ``rows`` (columns: the keys of all rows, first seen first)."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    if not columns:
        return ""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "-" if math.isnan(value) else f"{value:.4f}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def log_benchmark(
    name: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    tables: dict[str, list[dict[str, Any]]] | None = None,
    curves: dict[str, list[dict[str, Any]]] | None = None,
) -> str:
    """Log one benchmark run to the MLflow experiment ``bench-<name>``; returns the run id.

    ``tables`` go to ``tables/<key>.json`` and ``tables/<key>.md``; ``curves`` are
    ``TrainResult.history`` lists, plotted with ``recsys.evaluation.report.learning_curve`` to
    ``curves/<key>.png`` and kept as ``curves/<key>.json``. Non-finite metrics are skipped.
    """
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from recsys.config import Settings
    from recsys.evaluation.report import learning_curve

    settings = Settings.from_env()
    uri = absolute_uri(settings.tracking_uri)
    client = MlflowClient(tracking_uri=uri)
    experiment = f"bench-{name}"
    exp = client.get_experiment_by_name(experiment)
    exp_id = (
        exp.experiment_id
        if exp is not None
        else client.create_experiment(experiment, artifact_location=settings.artifact_root)
    )
    run_name = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_id = client.create_run(exp_id, run_name=run_name).info.run_id
    try:
        now = int(time.time() * 1000)
        client.log_batch(
            run_id,
            metrics=[
                Metric(key, float(value), now, 0)
                for key, value in metrics.items()
                if math.isfinite(float(value))
            ],
            params=[Param(key, str(value)[:6000]) for key, value in params.items()],
        )
        for key, rows in (tables or {}).items():
            client.log_dict(run_id, rows, f"tables/{key}.json")
            client.log_text(run_id, markdown_table(rows), f"tables/{key}.md")
        for key, history in (curves or {}).items():
            client.log_dict(run_id, history, f"curves/{key}.json")
            client.log_figure(run_id, learning_curve(history), f"curves/{key}.png")
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    return run_id


def champion_from_store(settings: Any, epochs: int, label: str) -> None:
    """Everything in the event store -> one interval -> features -> a full model, registered and
    promoted (forced: there is nothing to compare with). ``label`` names the data in errors."""
    import datetime as dt

    from recsys.config import PipelineConfig
    from recsys.data import events, ingest
    from recsys.data.lake import Interval
    from recsys.release import pipeline, promote

    first, last = events.EventStore(settings.event_store_url).bounds()
    start = dt.datetime.combine(first.date(), dt.time())
    interval = Interval(start, dt.datetime.combine(last.date(), dt.time()) + dt.timedelta(days=1))
    checked = ingest.run(settings, interval)["validation"]
    if not checked["success"]:
        raise SystemExit(f"{label} failed validation: {checked['summary']}")
    cfg = PipelineConfig().with_epochs("full", epochs)
    trained = pipeline.train(settings, "full", cfg)
    pipeline.evaluate(settings, trained["run_id"], cfg)
    version = pipeline.register(settings, trained["run_id"])["version"]
    promote.run(settings, version, cfg, force=f"benchmark setup on {label}")
