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

from recsys.config import CHALLENGER, CHAMPION, PipelineConfig, Settings
from recsys.registry.tags import (
    BASELINE,
    COMPARISON_JSON,
    COMPARISON_MD,
    PLOTS,
    POPULARITY,
    TAG_BASELINES_SKIPPED,
    TAG_DATA_END,
    TAG_FEATURES,
    TAG_FEATURES_VERSION,
    TAG_MODE,
    TAG_MODEL_ID,
    TAG_PARENT,
    TAG_RUN,
    TEST,
    VERSION_METRICS,
)
from recsys.release import training_run

log = logging.getLogger(__name__)


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
    from recsys.evaluation.metrics import evaluate_model
    from recsys.model.sasrec import build_model

    return evaluate_model(build_model(ckpt), split, n_items, k=k)


def training_state_path(
    settings: Settings, mode: str, features_version: str, parent: str | None
) -> Path:
    """Where a training writes its state after each epoch: a retried task resumes from it."""
    return settings.home / "training-state" / f"{mode}-{features_version}-{parent or 'new'}.pt"


def forgetting_metrics(parent: Any, ckpt: Any, splits: Any, n_items: int, k: int) -> dict:
    """The fine-tune's guard against forgetting: the parent and the new model on the new data
    and on the fixed old slice. ``forgetting.old_ndcg_drop`` > 0 means old users lost quality."""
    out: dict[str, float] = {}
    for part, split in (("new", splits.new), ("old", splits.old)):
        if not split.test_target:
            continue
        for who, model in (("test", ckpt), ("parent.test", parent)):
            got = evaluate_checkpoint(model, split, n_items, k)
            out.update({f"{who}_{part}.{key}": value for key, value in got.items()})
    metric = f"ndcg_at_{k}"
    if f"test_old.{metric}" in out:
        out["forgetting.old_ndcg_drop"] = (
            out[f"parent.test_old.{metric}"] - out[f"test_old.{metric}"]
        )
    return out


def split_of(fs: Any, cfg: PipelineConfig) -> Any:
    """The leave-last-out split of a snapshot's sequences."""
    from recsys.data.splits import leave_last_out

    _, sequences = fs.sequences()
    return leave_last_out(sequences, min_events=cfg.eval.min_events)


def train(
    settings: Settings,
    mode: str = "full",
    cfg: PipelineConfig | None = None,
    context: dict[str, Any] | None = None,
    progress: Any = None,  # recsys.training.progress.Progress: called after every epoch
) -> dict[str, Any]:
    """Train a model (from scratch, or warm-started from the champion) and log it as an MLflow run.

    Returns ``{"run_id": ...}``, or ``{"skipped": True, "reason": ...}`` when an incremental
    fine-tune has nothing to do (no champion yet, or no new data since the champion's).
    """
    from recsys.data import features
    from recsys.registry.client import Registry

    cfg = cfg or PipelineConfig()
    train_cfg = cfg.training(mode)
    reg = Registry(settings)
    champion = reg.alias(CHAMPION) if mode == "incremental" else None
    if mode == "incremental" and champion is None:
        return _skipped("no champion yet: run recsys_full_retrain (recsys train --mode full) first")
    fs = features.load(settings)
    reason = None if champion is None else _nothing_to_finetune(reg, champion, fs)
    if reason is not None:
        return _skipped(reason)
    from recsys.training import loop as T  # torch: only once we know there is work to do

    init, parent, since = _warm_start(reg, champion)
    split, splits = _training_split(fs, cfg, train_cfg, since)
    state_path = training_state_path(settings, mode, fs.manifest.get("version", ""), parent)
    started = time.time()
    device = T.resolve_device(settings.train_device)
    run_id = training_run.open_run(reg, fs, mode, parent, context, state_path.stem)
    with reg.ended_on_error(run_id), training_run.system_metrics(reg, run_id):
        result = T.train(split, fs.n_items, cfg.model, train_cfg, init=init,
                         state_path=state_path, device=device,
                         progress=training_run.LiveCurves(reg, run_id, progress))  # fmt: skip
        resumed = result.resumed_after_epoch
        if resumed:
            log.info("resumed an earlier attempt's training after epoch %d", resumed)
        ckpt = result.checkpoint
        guard = {} if splits is None else forgetting_metrics(init, ckpt, splits, fs.n_items,
                                                             cfg.eval.k)  # fmt: skip
        ckpt.metadata.update(item_ids=fs.item_ids, features_interval=fs.manifest["interval"]["id"])
        training_run.finish_run(
            reg, run_id, fs, mode, cfg, parent, (split, splits), result, str(device),
            {"train.seconds": time.time() - started, **guard},
        )  # fmt: skip
    state_path.unlink(missing_ok=True)  # logged: a retry of this task starts a new run
    log.info("trained %s model in run %s (best epoch %s)", mode, run_id, result.best_epoch)
    return {
        "run_id": run_id,
        "mode": mode,
        "features": fs.manifest["interval"]["id"],
        "parent_version": parent,
        "resumed_from_epoch": resumed,
    }


def _skipped(reason: str) -> dict[str, Any]:
    log.warning("incremental fine-tune skipped: %s", reason)
    return {"skipped": True, "reason": reason}


def _nothing_to_finetune(reg: Any, champion: Any, fs: Any) -> str | None:
    """Why fine-tuning ``champion`` on snapshot ``fs`` would do nothing new, or None."""
    if fs.manifest["last_ingested_at"] <= champion.tags[TAG_DATA_END]:
        return f"no data ingested after the champion's ({champion.tags[TAG_DATA_END]})"
    twin = _already_finetuned(reg, str(champion.version), fs.manifest.get("version"))
    if twin is not None:
        return (
            f"version {twin} was already fine-tuned from champion {champion.version} on "
            f"this features snapshot"
        )
    return None


def _warm_start(reg: Any, champion: Any) -> tuple[Any, str | None, dt.datetime | None]:
    """``(checkpoint, parent version, its data end)`` of the champion; Nones for a full retrain."""
    from recsys.model.sasrec import Checkpoint

    if champion is None:
        return None, None, None
    with tempfile.TemporaryDirectory() as tmp:
        init = Checkpoint.load(reg.version_checkpoint(champion.version, Path(tmp)))
    return init, str(champion.version), dt.datetime.fromisoformat(champion.tags[TAG_DATA_END])


def _training_split(
    fs: Any, cfg: PipelineConfig, train_cfg: Any, since: dt.datetime | None
) -> tuple[Any, Any]:
    """``(split to train on, IncrementalSplits or None)``. A fine-tune trains on the users with
    events since ``since`` and a replay of old users, and keeps a fixed old slice to check
    forgetting; a full retrain on everyone's leave-last-out split."""
    from recsys.data.splits import incremental_splits

    if since is None:
        return split_of(fs, cfg), None
    users, sequences = fs.sequences()
    active = set(fs.sequences(since)[0])
    splits = incremental_splits(
        users, sequences, active, train_cfg.replay_ratio, train_cfg.seed, cfg.eval.min_events
    )
    return splits.train, splits


def evaluate(settings: Settings, run_id: str, cfg: PipelineConfig | None = None) -> dict[str, Any]:
    """``_evaluate``; an evaluation that fails ends the run FAILED (its retry logs to it again,
    and registering it ends it FINISHED)."""
    from recsys.registry.client import Registry

    with Registry(settings).ended_on_error(run_id):
        return _evaluate(settings, run_id, cfg)


def _evaluate(settings: Settings, run_id: str, cfg: PipelineConfig | None = None) -> dict[str, Any]:
    """Evaluate a run's checkpoint and the baselines on the same leave-last-out test, and log what a
    reviewer reads on the run's page.

    Metrics: ``test.*`` (the model: accuracy and beyond-accuracy), ``popularity.*`` and
    ``baseline.<name>.*`` (every baseline of ``recsys.evaluation.baselines.FITTERS`` the catalogue
    affords; the ``baseline.skipped`` tag names the others). Artifacts: ``comparison.md`` and
    ``comparison.json``; ``plots/learning_curve.png`` (from the run's ``train.*`` histories),
    ``plots/ndcg_by_history_length.png`` and ``plots/recommendation_popularity.png``, each plot
    with its numbers beside it as a ``.json`` table.
    """
    from recsys.data import features
    from recsys.evaluation import metrics as E
    from recsys.evaluation import report
    from recsys.evaluation.baselines import FITTERS
    from recsys.model.sasrec import Checkpoint, build_model, score_contexts
    from recsys.registry.client import Registry

    cfg = cfg or PipelineConfig()
    reg = Registry(settings)
    run = reg.run(run_id)
    fs = features.load(settings, run.data.tags[TAG_FEATURES])
    training_run.log_data(reg, run_id, fs, "evaluation")  # its test split
    split = split_of(fs, cfg)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Checkpoint.load(reg.run_checkpoint(run_id, Path(tmp)))
    k, n_items = cfg.eval.k, fs.n_items
    contexts, targets = split.test_context, split.test_target
    counts = E.popularity_scores(split.train, n_items)  # (n_items + 1,)

    def metrics_of(scores: Any) -> dict[str, float]:  # scores: (N, n_items + 1)
        return {
            **E.evaluate_scores(scores, contexts, targets, k=k),
            **E.evaluate_beyond_accuracy(scores, contexts, counts, k=k),
        }

    scores = score_contexts(build_model(ckpt), contexts, n_items)  # as evaluate_checkpoint
    rows = {"sasrec (this run)": metrics_of(scores)}
    skipped = report.unaffordable_baselines(FITTERS, n_items)
    for name, fit in FITTERS.items():
        if name in skipped:
            log.warning("baseline %s skipped: %s", name, skipped[name])
            continue
        rows[name] = metrics_of(fit(split.train, n_items).score(contexts))
    metrics = {
        **{f"{TEST}{key}": v for key, v in rows["sasrec (this run)"].items()},
        **{f"{POPULARITY}{key}": v for key, v in E.evaluate_popularity(split, n_items, k).items()},
        **{
            f"{BASELINE}{name}.{key}": v
            for name, row in list(rows.items())[1:]
            for key, v in row.items()
            if key != "n_users"
        },
    }
    skipped_text = "; ".join(f"{name}: {why}" for name, why in skipped.items()) or "none"
    reg.log(run_id, metrics=metrics, tags={TAG_BASELINES_SKIPPED: skipped_text})

    columns = [f"hr_at_{k}", f"ndcg_at_{k}", "mrr", f"coverage_at_{k}", f"novelty_at_{k}"]
    table = report.comparison_table(rows, [*columns, f"arp_at_{k}"], [f"arp_at_{k}"])
    header = f"Test: last item of {len(targets)} users, full ranking, seen items filtered.\n\n"
    reg.log_text(run_id, f"{header}{table}\nSkipped baselines: {skipped_text}\n", COMPARISON_MD)
    named_rows = [{"model": model, **row} for model, row in rows.items()]
    reg.log_table(run_id, report.as_columns(named_rows), COMPARISON_JSON)

    _log_plots(reg, run_id, scores, contexts, targets, counts, k)
    log.info("run %s: %s", run_id, metrics)
    return {"run_id": run_id, **metrics}


def _log_plots(
    reg: Any, run_id: str, scores: Any, contexts: Any, targets: Any, counts: Any, k: int
) -> None:
    """The run's learning curve, NDCG by history length and the popularity of what it
    recommends, each as a ``.png`` with its numbers beside it as a ``.json`` table."""
    from recsys.evaluation import metrics as E
    from recsys.evaluation import report

    curves = {"train.loss": "train loss", f"train.ndcg_at_{k}": f"valid ndcg_at_{k}"}
    history = [
        {"epoch": row["step"], **{curves[key]: v for key, v in row.items() if key in curves}}
        for row in reg.metric_history(run_id, list(curves))
    ]
    ranks = E.rank_targets(scores, targets, contexts)
    lengths = [len(c) for c in contexts]
    topk = E.top_k(scores, contexts, k)  # (N, k)
    plots = report.evaluation_plots(history, list(curves.values()), ranks, lengths, topk, counts, k)
    for name, (fig, data) in plots.items():
        reg.log_figure(run_id, fig, f"{PLOTS}/{name}.png")
        reg.log_table(run_id, report.as_columns(data), f"{PLOTS}/{name}.json")


def register(settings: Settings, run_id: str) -> dict[str, Any]:
    """Register a run's model as a new version of the registered model, alias ``challenger``."""
    from recsys.registry.client import Registry

    reg = Registry(settings)
    run = reg.run(run_id)
    tags = {
        key: run.data.tags.get(key, "")
        for key in (TAG_MODE, TAG_FEATURES, TAG_FEATURES_VERSION, TAG_DATA_END, TAG_PARENT)
    }
    tags[TAG_RUN] = run_id
    tags.update(
        {k: f"{v:.4f}" for k, v in run.data.metrics.items() if k.startswith(VERSION_METRICS)}
    )
    with tempfile.TemporaryDirectory() as tmp:
        ckpt_path = reg.run_checkpoint(run_id, Path(tmp))
        version = reg.register(run_id, ckpt_path, tags)
    measured = {k: v for k, v in run.data.metrics.items() if k.startswith(TEST)}
    model_id = version.model_id or version.tags.get(TAG_MODEL_ID)
    if model_id and measured:  # the LoggedModel's page shows them
        dataset = training_run.dataset_id(
            tags[TAG_FEATURES], tags[TAG_FEATURES_VERSION], "evaluation"
        )
        reg.log_model_metrics(run_id, model_id, measured, dataset)
    reg.set_alias(CHALLENGER, str(version.version))
    log.info("registered %s version %s (alias %s)", reg.name, version.version, CHALLENGER)
    return {"run_id": run_id, "version": str(version.version), "model": reg.name}
