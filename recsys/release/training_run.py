"""The MLflow run of a training: what a reviewer reads on its page."""

from __future__ import annotations

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
)


def log_training_run(
    reg: Any,
    fs: Any,
    mode: str,
    cfg: PipelineConfig,
    parent: str | None,
    context: dict[str, Any] | None,
    split_and_splits: tuple[Any, Any],
    result: Any,
    device: str,
    metrics: dict[str, float],
) -> str:
    """The MLflow run of a training: tags, params, curves, metrics, config, lineage, checkpoint."""
    from recsys.registry.lineage import code_version, lineage_record

    split, splits = split_and_splits
    interval_id = fs.manifest["interval"]["id"]
    tags = {
        TAG_MODE: mode,
        TAG_FEATURES: interval_id,
        TAG_DATA_END: fs.manifest["last_ingested_at"],
        TAG_PARENT: parent or "",
        TAG_FEATURES_VERSION: fs.manifest.get("version", ""),
        TAG_GIT_COMMIT: code_version(),
        **{f"{AIRFLOW}{k}": v for k, v in (context or {}).items()},
    }
    run_id = reg.create_run(f"{mode}-{interval_id}", tags)
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
    for step, row in enumerate(result.history):
        reg.log(
            run_id,
            metrics={f"train.{k}": v for k, v in row.items() if k != "epoch"},
            step=int(row.get("epoch", step)),
        )
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
    return run_id
