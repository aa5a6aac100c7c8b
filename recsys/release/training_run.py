"""The MLflow run of a training attempt. It opens before training, so the MLflow UI shows the
loss, each validation check and the machine's CPU and memory as they happen; the rest (params,
summary metrics, config, lineage, checkpoint) is logged once training ends. An attempt that dies
ends its run FAILED (``Registry.ended_on_error``); one killed outright is ended KILLED by the
retry, which resumes the training in a run of its own."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from recsys.config import PipelineConfig, to_dict
from recsys.registry.tags import (
    AIRFLOW,
    CONFIG_FILE,
    LINEAGE_FILE,
    TAG_DATA_END,
    TAG_FEATURES,
    TAG_FEATURES_VERSION,
    TAG_GIT_COMMIT,
    TAG_MODE,
    TAG_PARENT,
    TAG_TRAINING,
)
from recsys.training.progress import EpochReport, Progress

log = logging.getLogger(__name__)

DIGEST_CHARS = 16  # of the snapshot's sha256: MLflow keeps at most 36


def open_run(
    reg: Any, fs: Any, mode: str, parent: str | None, context: dict | None, training: str
) -> str:
    """Create this attempt's run (RUNNING). Runs that earlier attempts of the same ``training``
    (its resumable state's name) left RUNNING were killed without a word: they end KILLED."""
    from recsys.registry.lineage import code_version

    earlier = reg.client.search_runs(
        [reg.experiment_id()],
        filter_string=f"tags.`{TAG_TRAINING}` = '{training}' and attributes.status = 'RUNNING'",
    )
    for run in earlier:
        log.info("run %s of an earlier attempt was left running: ended KILLED", run.info.run_id)
        reg.end_run(run.info.run_id, "KILLED")
    interval_id = fs.manifest["interval"]["id"]
    tags = {
        TAG_MODE: mode,
        TAG_FEATURES: interval_id,
        TAG_DATA_END: fs.manifest["last_ingested_at"],
        TAG_PARENT: parent or "",
        TAG_FEATURES_VERSION: fs.manifest.get("version", ""),
        TAG_GIT_COMMIT: code_version(),
        TAG_TRAINING: training,
        **{f"{AIRFLOW}{k}": v for k, v in (context or {}).items()},
    }
    run_id = reg.create_run(f"{mode}-{interval_id}", tags)
    log_data(reg, run_id, fs, "training")
    return run_id


def log_data(reg: Any, run_id: str, fs: Any, context: str) -> tuple[str, str]:
    """The features snapshot as the run's dataset input: digest its content hash (shortened to
    MLflow's 36 characters; the whole in the profile), source its folder in the lake. Returns
    (name, digest), to link metrics measured on it."""
    from recsys.data.lake import Interval, Lake

    interval = Interval.from_id(fs.manifest["interval"]["id"])
    version = fs.manifest.get("version", "")
    source = str(Lake(reg.settings.lake_root).snapshot(interval))
    profile = {"version": version, "interactions": len(fs.interactions), "items": fs.n_items,
               "partitions": len(fs.manifest["partitions"])}  # fmt: skip
    name, digest = dataset_id(interval.id, version, context)
    reg.log_dataset(run_id, name, digest, source, profile, context)
    return name, digest


def dataset_id(interval_id: str, version: str, context: str) -> tuple[str, str]:
    """The (name, digest) MLflow knows a features snapshot by: its training view, or the test
    split an evaluation scores (``-test``; MLflow keeps one input per dataset and run)."""
    suffix = "-test" if context == "evaluation" else ""
    return f"features-{interval_id}{suffix}", version[:DIGEST_CHARS]


class LiveCurves:
    """A ``Progress`` that logs each epoch's loss and each validation check as it happens, then
    passes the report on (to the CLI's progress bar, say)."""

    def __init__(self, reg: Any, run_id: str, then: Progress | None = None) -> None:
        self.reg, self.run_id, self.then = reg, run_id, then

    def __call__(self, report: EpochReport) -> None:
        checked = {f"train.{k}": v for k, v in (report.valid or {}).items()}
        self.reg.log(self.run_id, metrics={"train.loss": report.loss, **checked}, step=report.epoch)
        if self.then is not None:
            self.then(report)


@contextlib.contextmanager
def system_metrics(reg: Any, run_id: str) -> Iterator[None]:
    """MLflow's system metrics (CPU, memory, disk, network; GPU when it sees one) on the run
    while training, sampled every 10 s (``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL``). On unless
    ``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING`` is set false (the tests do: their trainings last
    seconds, and the sampler is one more writer on their SQLite stores)."""
    from mlflow.environment_variables import MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING as ENABLED
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    if ENABLED.is_set() and not ENABLED.get():
        yield
        return
    monitor = SystemMetricsMonitor(run_id, tracking_uri=reg.settings.tracking_uri)
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()


def finish_run(
    reg: Any,
    run_id: str,
    fs: Any,
    mode: str,
    cfg: PipelineConfig,
    parent: str | None,
    split_and_splits: tuple[Any, Any],
    result: Any,
    device: str,
    metrics: dict[str, float],
) -> None:
    """What a training's run holds besides its live curves: params, the curves of the epochs an
    earlier attempt trained (a resumed training), summary metrics, config, lineage, checkpoint."""
    from recsys.registry.lineage import lineage_record

    split, splits = split_and_splits
    params = {
        **to_dict(cfg),
        "mode": mode,
        "data.interval_start": fs.manifest["interval"]["start"],
        "data.interval_end": fs.manifest["interval"]["end"],
        "data.n_train_sequences": len(split.train),
        # 0: trained from its first epoch in this attempt
        "train.resumed_from_epoch": result.resumed_after_epoch,
        "train.device": device,
        **(
            {}
            if splits is None
            else {
                "data.n_new_sequences": len(splits.new.train),
                "data.n_replayed_sequences": len(split.train) - len(splits.new.train),
                "data.n_old_slice_users": len(splits.old.test_target),
            }
        ),
        "data.n_items": fs.n_items,
        "data.partitions": len(fs.manifest["partitions"]),
        "data.features_version": fs.manifest.get("version", ""),
        "data.all_partitions_validated": all(
            p.get("validation", {}).get("success") for p in fs.manifest["partitions"]
        ),
    }
    reg.log(run_id, params=params)
    for epoch, loss in enumerate(result.losses[: result.resumed_after_epoch], start=1):
        reg.log(run_id, metrics={"train.loss": loss}, step=epoch)  # the earlier attempt's
    for row in result.history:
        if row["epoch"] <= result.resumed_after_epoch:
            checked = {f"train.{k}": v for k, v in row.items() if k not in ("epoch", "loss")}
            reg.log(run_id, metrics=checked, step=int(row["epoch"]))
    reg.log(
        run_id,
        metrics={
            "train.seconds": metrics["train.seconds"],
            "train.tokens_per_s": result.tokens_per_s,
            "train.best_epoch": result.best_epoch,
            **{f"valid.{k}": v for k, v in result.best_valid.items()},
            **{k: v for k, v in metrics.items() if k != "train.seconds"},
        },
    )
    reg.log_dict(
        run_id,
        {
            "config": to_dict(cfg),
            "mode": mode,
            "features": {k: v for k, v in fs.manifest.items() if k != "item_ids"},
        },
        CONFIG_FILE,
    )
    reg.log_dict(run_id, lineage_record(fs, mode, parent), LINEAGE_FILE)
    reg.log_checkpoint(run_id, result.checkpoint)
