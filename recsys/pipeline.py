"""The I/O edges of training: features in, MLflow runs and model versions out.

Each function is one Airflow task (and one CLI command). They pass small dicts of ids between them,
never data: a task can be retried or run on another machine.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from recsys.config import CHALLENGER, CHAMPION, PipelineConfig, Settings, to_dict

log = logging.getLogger(__name__)

# Tags written on runs and model versions (also what `recsys` reads back).
TAG_MODE = "recsys.mode"
TAG_FEATURES = "recsys.features_interval"
TAG_DATA_END = "recsys.data_last_ingested_at"
TAG_PARENT = "recsys.parent_version"
TAG_RUN = "recsys.run_id"
TAG_FEATURES_VERSION = "recsys.features_version"
LINEAGE_FILE = "lineage.json"


def lineage_record(fs: Any, mode: str, parent: str | None) -> dict[str, Any]:
    """What a run was trained and evaluated on: the snapshot and every partition in it."""
    manifest = fs.manifest
    return {
        "mode": mode,
        "parent_version": parent,
        "features": {
            "interval": manifest["interval"],
            "version": manifest.get("version"),
            "path": manifest["path"],
            "n_events": manifest["n_events"],
            "n_users": manifest["n_users"],
            "n_items": manifest["n_items"],
        },
        "evaluated_on": "the same snapshot: leave-last-out test items (last event per user)",
        "partitions": manifest["partitions"],
    }


def _already_finetuned(reg: Any, parent: str, features_version: str | None) -> str | None:
    """A version fine-tuned from ``parent`` on the same snapshot, if any: training it again would
    only register a duplicate."""
    for version in reg.versions():
        tags = version.tags
        if (
            tags.get(TAG_MODE) == "incremental"
            and tags.get(TAG_PARENT) == parent
            and features_version
            and tags.get(TAG_FEATURES_VERSION) == features_version
        ):
            return str(version.version)
    return None


def evaluate_checkpoint(ckpt: Any, split: Any, n_items: int, k: int) -> dict[str, float]:
    """Full-ranking metrics of a checkpoint on the test users of ``split`` (seen items filtered)."""
    from recsys.evaluate import evaluate_model
    from recsys.model import build_model

    return evaluate_model(build_model(ckpt), split, n_items, k=k)


def split_of(fs: Any, cfg: PipelineConfig, since: dt.datetime | None = None) -> Any:
    """The leave-last-out split of a snapshot (of the users active since ``since``, if given)."""
    from recsys import evaluate as E

    _, sequences = fs.sequences(since)
    return E.leave_last_out(sequences, min_events=cfg.eval.min_events)


def train(
    settings: Settings,
    mode: str = "full",
    cfg: PipelineConfig | None = None,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train a model (from scratch, or warm-started from the champion) and log it as an MLflow run.

    Returns ``{"run_id": ...}``, or ``{"skipped": True, "reason": ...}`` when an incremental
    fine-tune has nothing to do (no champion yet, or no new data since the champion's).
    """
    from recsys import features
    from recsys.registry import Registry

    cfg = cfg or PipelineConfig()
    train_cfg = cfg.training(mode)
    reg = Registry(settings)
    champion = reg.alias(CHAMPION) if mode == "incremental" else None
    if mode == "incremental" and champion is None:
        reason = "no champion yet: run recsys_full_retrain (recsys train --mode full) first"
        log.warning("incremental fine-tune skipped: %s", reason)
        return {"skipped": True, "reason": reason}
    fs = features.load(settings)
    interval_id = fs.manifest["interval"]["id"]
    init, parent, since = None, None, None
    from recsys import train as T  # torch: only once we know there is work to do
    from recsys.model import Checkpoint

    if champion is not None:
        since = dt.datetime.fromisoformat(champion.tags[TAG_DATA_END])
        if fs.manifest["last_ingested_at"] <= champion.tags[TAG_DATA_END]:
            reason = f"no data ingested after the champion's ({champion.tags[TAG_DATA_END]})"
            log.warning("incremental fine-tune skipped: %s", reason)
            return {"skipped": True, "reason": reason}
        twin = _already_finetuned(reg, str(champion.version), fs.manifest.get("version"))
        if twin is not None:
            reason = (
                f"version {twin} was already fine-tuned from champion {champion.version} on "
                f"this features snapshot"
            )
            log.warning("incremental fine-tune skipped: %s", reason)
            return {"skipped": True, "reason": reason}
        with tempfile.TemporaryDirectory() as tmp:
            init = Checkpoint.load(reg.version_checkpoint(champion.version, Path(tmp)))
        parent = str(champion.version)
    split = split_of(fs, cfg, since)
    started = time.time()
    result = T.train(split, fs.n_items, cfg.model, train_cfg, init=init)
    ckpt = result.checkpoint
    ckpt.metadata.update(item_ids=fs.item_ids, features_interval=interval_id)
    tags = {
        TAG_MODE: mode,
        TAG_FEATURES: interval_id,
        TAG_DATA_END: fs.manifest["last_ingested_at"],
        TAG_PARENT: parent or "",
        TAG_FEATURES_VERSION: fs.manifest.get("version", ""),
        **{f"airflow.{k}": v for k, v in (context or {}).items()},
    }
    run_id = reg.create_run(f"{mode}-{interval_id}", tags)
    params = {
        **to_dict(cfg),
        "mode": mode,
        "data.interval_start": fs.manifest["interval"]["start"],
        "data.interval_end": fs.manifest["interval"]["end"],
        "data.n_train_sequences": len(split.train),
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
            "train.seconds": time.time() - started,
            "train.tokens_per_s": result.tokens_per_s,
            "train.best_epoch": result.best_epoch,
            **{f"valid.{k}": v for k, v in result.best_valid.items()},
        },
    )
    reg.log_dict(
        run_id,
        {
            "config": to_dict(cfg),
            "mode": mode,
            "features": {k: v for k, v in fs.manifest.items() if k != "item_ids"},
        },
        "config.json",
    )
    reg.log_dict(run_id, lineage_record(fs, mode, parent), LINEAGE_FILE)
    reg.log_checkpoint(run_id, ckpt)
    log.info("trained %s model in run %s (best epoch %s)", mode, run_id, result.best_epoch)
    return {"run_id": run_id, "mode": mode, "features": interval_id, "parent_version": parent}


def evaluate(settings: Settings, run_id: str, cfg: PipelineConfig | None = None) -> dict[str, Any]:
    """Evaluate a run's checkpoint and the popularity baseline on the same leave-last-out test."""
    from recsys import evaluate as E
    from recsys import features
    from recsys.model import Checkpoint
    from recsys.registry import Registry

    cfg = cfg or PipelineConfig()
    reg = Registry(settings)
    run = reg.run(run_id)
    fs = features.load(settings, run.data.tags[TAG_FEATURES])
    split = split_of(fs, cfg)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Checkpoint.load(reg.run_checkpoint(run_id, Path(tmp)))
    k = cfg.eval.k
    model_metrics = evaluate_checkpoint(ckpt, split, fs.n_items, k)
    pop = E.evaluate_popularity(split, fs.n_items, k=k)
    metrics = {
        **{f"test.{key}": v for key, v in model_metrics.items()},
        **{f"popularity.{key}": v for key, v in pop.items()},
    }
    reg.log(run_id, metrics=metrics)
    log.info("run %s: %s", run_id, metrics)
    return {"run_id": run_id, **metrics}


def register(settings: Settings, run_id: str) -> dict[str, Any]:
    """Register a run's model as a new version of the registered model, alias ``challenger``."""
    from recsys.registry import Registry

    reg = Registry(settings)
    run = reg.run(run_id)
    tags = {
        key: run.data.tags.get(key, "")
        for key in (TAG_MODE, TAG_FEATURES, TAG_FEATURES_VERSION, TAG_DATA_END, TAG_PARENT)
    }
    tags[TAG_RUN] = run_id
    tags.update(
        {
            k: f"{v:.4f}"
            for k, v in run.data.metrics.items()
            if k.startswith(("test.", "popularity."))
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        ckpt_path = reg.run_checkpoint(run_id, Path(tmp))
        version = reg.register(run_id, ckpt_path, tags)
    reg.set_alias(CHALLENGER, str(version.version))
    log.info("registered %s version %s (alias %s)", reg.name, version.version, CHALLENGER)
    return {"run_id": run_id, "version": str(version.version), "model": reg.name}
