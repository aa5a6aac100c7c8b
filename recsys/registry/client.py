"""The one module that talks to MLflow: runs, checkpoints, model versions and aliases.

Models are registered as versions of one registered model (``recsys``); the ``champion`` alias is
what serving loads, ``challenger`` marks the newest candidate. Aliases, not stages (MLflow 3).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient

from recsys.config import Settings
from recsys.model.sasrec import Checkpoint
from recsys.registry.tags import CHECKPOINT_DIR, CHECKPOINT_FILE, MODEL_NAME, TAG_MODEL_ID

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
DEFAULT_K = 10  # recommendations per user when the caller passes no ``k`` (as the pyfunc)


def _not_found(err: MlflowException) -> bool:
    """Whether MLflow said the alias or model does not exist (not that it failed to look)."""
    if err.error_code == "RESOURCE_DOES_NOT_EXIST":
        return True
    # A missing alias is INVALID_PARAMETER_VALUE "Registered model alias ... not found."
    return err.error_code == "INVALID_PARAMETER_VALUE" and "not found" in str(err.message)


def model_signature() -> ModelSignature:
    """What the pyfunc flavour (``pyfunc_model.py``) takes and returns: item-id lists, param k."""
    from mlflow.types.schema import Array, ColSpec, DataType, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec(Array(DataType.string), "history")]),
        outputs=Schema([ColSpec(Array(DataType.string), "recommendations")]),
        params=ParamSchema([ParamSpec("k", DataType.long, DEFAULT_K)]),
    )


def input_example(item_ids: Sequence[str], n_users: int = 2, length: int = 3) -> pd.DataFrame:
    """A pyfunc input of ``n_users`` histories of up to ``length`` known item ids (oldest first)."""
    import pandas as pd

    if not item_ids:
        raise ValueError("an input example needs at least one item id")
    starts = range(0, n_users * length, length)
    histories = [list(item_ids[s % len(item_ids) :][:length]) for s in starts]
    return pd.DataFrame({"history": histories})


@dataclass
class Registry:
    settings: Settings

    def __post_init__(self) -> None:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        mlflow.set_tracking_uri(self.settings.tracking_uri)
        mlflow.set_registry_uri(self.settings.tracking_uri)
        self.client = MlflowClient(self.settings.tracking_uri, self.settings.tracking_uri)
        self.name = self.settings.registered_model

    # -- runs ---------------------------------------------------------------------------------
    def experiment_id(self, name: str | None = None) -> str:
        """The id of experiment ``name`` (default: the training experiment), created if new."""
        name = name or self.settings.experiment
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        try:
            return self.client.create_experiment(
                name, artifact_location=self.settings.artifact_root
            )
        except MlflowException:  # created by a concurrent task meanwhile
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def create_run(self, run_name: str, tags: dict[str, str], experiment: str | None = None) -> str:
        return self.client.create_run(
            self.experiment_id(experiment), run_name=run_name, tags=tags
        ).info.run_id

    def log_dataset(
        self, run_id: str, name: str, digest: str, source: str, profile: dict, context: str
    ) -> None:
        """A dataset input of the run, as the MLflow UI's Datasets show it: ``context`` is
        ``training`` or ``evaluation``, ``source`` where the data lies (a path or URL)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        scheme = source.split("://", 1)[0] if "://" in source else "local"
        dataset = Dataset(name, digest, scheme, json.dumps({"uri": source}),
                          profile=json.dumps(profile))  # fmt: skip
        tags = [InputTag("mlflow.data.context", context)]
        self.client.log_inputs(run_id, [DatasetInput(dataset, tags)])

    def log_model_metrics(
        self, run_id: str, model_id: str, metrics: dict[str, float], dataset: tuple[str, str]
    ) -> None:
        """``metrics`` of ``run_id`` again, linked to its LoggedModel ``model_id`` and the
        dataset (name, digest) they were measured on: the model's page in the UI shows them."""
        import time

        now, (name, digest) = int(time.time() * 1000), dataset
        rows = [Metric(k, float(v), now, 0, model_id=model_id, dataset_name=name,
                       dataset_digest=digest) for k, v in metrics.items()]  # fmt: skip
        self.client.log_batch(run_id, metrics=rows)

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        """Mark a run created by ``create_run`` as ended (FINISHED, FAILED or KILLED)."""
        self.client.set_terminated(run_id, status)

    @contextlib.contextmanager
    def ended_on_error(self, run_id: str) -> Iterator[None]:
        """An exception inside ends ``run_id`` FAILED (KILLED when interrupted) and propagates:
        no run stays RUNNING after the work it tracks died."""
        try:
            yield
        except BaseException as err:
            status = "KILLED" if isinstance(err, KeyboardInterrupt | SystemExit) else "FAILED"
            try:
                self.end_run(run_id, status)
            except Exception as end_err:  # the registry down too: the first error matters more
                log.warning("could not end run %s %s: %s", run_id, status, end_err)
            raise

    def log(
        self,
        run_id: str,
        metrics: dict[str, float] | None = None,
        params: dict[str, Any] | None = None,
        tags: dict[str, Any] | None = None,
        step: int = 0,
    ) -> None:
        import time

        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, step) for k, v in (metrics or {}).items()],
            params=[Param(k, str(v)[:6000]) for k, v in (params or {}).items()],
            tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
        )

    def log_dict(self, run_id: str, obj: dict, artifact_file: str) -> None:
        self.client.log_dict(run_id, obj, artifact_file)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def log_figure(self, run_id: str, fig: Figure, artifact_file: str) -> None:
        """Save a matplotlib figure (e.g. ``plots/x.png``) into the run's artifacts."""
        self.client.log_figure(run_id, fig, artifact_file, save_kwargs={"dpi": 100})

    def log_table(self, run_id: str, data: dict[str, list], artifact_file: str) -> None:
        """Log columns (name -> values) as an MLflow table (``.json``, pandas "split" format).

        ``MlflowClient.log_table`` appends to a table the run already has; a retried task must not
        duplicate rows, so an existing table is overwritten (same format) instead.
        """
        existing = {
            f.path
            for f in self.client.list_artifacts(run_id, posixpath.dirname(artifact_file) or None)
        }
        if artifact_file not in existing:
            self.client.log_table(run_id, data, artifact_file)
            return
        import pandas as pd

        frame = pd.DataFrame(data)
        self.client.log_text(run_id, frame.to_json(orient="split", index=False), artifact_file)

    def metric_history(self, run_id: str, keys: Sequence[str]) -> list[dict[str, float]]:
        """The values of ``keys`` per step, one row per step in order: ``{"step": s, key: v}``.

        A key logged twice at one step keeps its latest value; a key missing at a step is absent
        from that row.
        """
        rows: dict[int, dict[str, float]] = {}
        for key in keys:
            for m in sorted(self.client.get_metric_history(run_id, key), key=lambda m: m.timestamp):
                rows.setdefault(int(m.step), {"step": int(m.step)})[key] = float(m.value)
        return [rows[step] for step in sorted(rows)]

    def run(self, run_id: str) -> Any:
        return self.client.get_run(run_id)

    def log_checkpoint(self, run_id: str, ckpt: Checkpoint) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / CHECKPOINT_FILE
            ckpt.save(path)
            self.client.log_artifact(run_id, str(path), CHECKPOINT_DIR)

    def run_checkpoint(self, run_id: str, dst: Path) -> Path:
        """Download the run's checkpoint into ``dst`` and return its path."""
        return Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path=f"{CHECKPOINT_DIR}/{CHECKPOINT_FILE}",
                dst_path=str(dst),
            )
        )

    # -- model versions and aliases -------------------------------------------------------------
    def register(self, run_id: str, ckpt_path: Path, tags: dict[str, Any]) -> ModelVersion:
        """Log the checkpoint as a pyfunc model of ``run_id`` and register it as a new version."""
        item_ids = [str(i) for i in Checkpoint.load(ckpt_path).metadata.get("item_ids") or []]
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME,
                python_model=str(PYFUNC_CODE),
                artifacts={"checkpoint": str(ckpt_path)},
                pip_requirements=["torch==2.13.0", "numpy", "pandas"],
                signature=model_signature(),
                # MLflow serves the example through the loaded model once, as a check.
                input_example=input_example(item_ids) if item_ids else None,
                registered_model_name=self.name,
            )
        version = str(info.registered_model_version)
        self.tag_version(version, {**tags, TAG_MODEL_ID: info.model_id or ""})
        return self.client.get_model_version(self.name, version)

    def version(self, version: str) -> ModelVersion:
        return self.client.get_model_version(self.name, version)

    def versions(self) -> list[ModelVersion]:
        found = self.client.search_model_versions(f"name = '{self.name}'")
        # Search results carry no aliases: read each version whole.
        return [self.version(str(v)) for v in sorted(int(v.version) for v in found)]

    def alias(self, alias: str) -> ModelVersion | None:
        """The version holding ``alias``, or None if the alias (or the model) does not exist.

        Any other MLflow error (the store busy or down) raises: None is an answer, not a guess.
        """
        try:
            return self.client.get_model_version_by_alias(self.name, alias)
        except MlflowException as err:
            if _not_found(err):
                return None
            raise

    def set_alias(self, alias: str, version: str) -> None:
        """Point ``alias`` at ``version``.

        MLflow looks the alias up and then inserts or updates it, so two processes setting a new
        alias at once can collide on its unique key. The one that lost retries once: the row
        exists by then, and the second try updates it.
        """
        try:
            self.client.set_registered_model_alias(self.name, alias, version)
        except MlflowException as err:
            if _not_found(err):  # no such model or version: trying again changes nothing
                raise
            log.warning("setting %s to version %s failed (%s); trying again", alias, version, err)
            self.client.set_registered_model_alias(self.name, alias, version)

    def delete_alias(self, alias: str) -> None:
        """Remove ``alias``; removing one that is not set is not an error."""
        try:
            self.client.delete_registered_model_alias(self.name, alias)
        except MlflowException as err:
            if not _not_found(err):
                raise

    def tag_version(self, version: str, tags: dict[str, Any], description: str | None = None):
        for key, value in tags.items():
            self.client.set_model_version_tag(self.name, version, key, str(value))
        if description is not None:
            self.client.update_model_version(self.name, version, description=description)

    def version_checkpoint(self, version: str, dst: Path) -> Path:
        """Download the checkpoint inside the registered model's artifacts."""
        root = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{self.name}/{version}", dst_path=str(dst)
        )
        found = sorted(Path(root).rglob(CHECKPOINT_FILE))
        if not found:
            raise FileNotFoundError(f"model version {version} holds no {CHECKPOINT_FILE}")
        return found[0]
