"""Typed configuration.

Two kinds of configuration live here:

* ``Settings``: *where* things are (URIs, folders). Built from environment variables only, so the
  same code runs on a laptop (everything under ``RECSYS_HOME``) and on shared services.
* ``ModelConfig`` / ``TrainConfig``: *what* to train. Frozen dataclasses, logged whole to MLflow and
  stored in every checkpoint.

Nothing here touches the disk or the network at import time.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# A lake path: a ``pathlib.Path`` for a local root, a ``upath.UPath`` for a URL. Both offer the
# pathlib API used here (``/``, ``name``, ``parent``, ``exists``, ``open``, ``unlink``...).
LakePath = Path


def lake_path(value: str | os.PathLike[str]) -> LakePath:
    """A lake path from configuration or from a path the lake printed: a local path (``~``
    expanded, made absolute; ``file://`` URLs too) or an fsspec URL such as ``s3://bucket/lake``,
    which needs its filesystem's package (``s3fs`` for S3) installed. Listings are not cached:
    other processes write the lake."""
    text = os.fspath(value)
    scheme, sep, rest = text.partition("://")
    if not sep or len(scheme) < 2:  # no URL (``C:\\`` is a drive, not a scheme)
        return Path(text).expanduser().resolve()
    if scheme == "file":
        return Path(rest).expanduser().resolve()
    try:
        from upath import UPath

        path = UPath(text, use_listings_cache=False)
        path.fs  # noqa: B018 - instantiates the filesystem: a missing package fails here, clearly
        return path
    except (ImportError, ValueError) as err:
        raise ValueError(
            f"lake root {text!r}: no filesystem for {scheme}:// ({err}). Install the fsspec "
            f"implementation for it (s3fs for s3://, gcsfs for gs://, adlfs for abfs://)"
        ) from err


def redact(url: str) -> str:
    """``url`` with its password (if any) as ``***``: what may be printed or logged."""
    scheme, sep, rest = str(url).partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return str(url)
    userinfo, _, host = rest.partition("@")
    user, has_password, _ = userinfo.partition(":")
    return f"{scheme}://{user}{':***' if has_password else ''}@{host}"


REGISTERED_MODEL = "recsys"
EXPERIMENT = "recsys"
CHAMPION = "champion"
CHALLENGER = "challenger"
# Airflow pool of one slot held by the training and promotion tasks: a full retrain and a fine-tune
# never train or promote at the same time. Create it with `airflow pools set training 1 "..."`
# (the demo and the compose deployment do).
TRAINING_POOL = "training"

# Environment variables, documented in the README's configuration table.
ENV_HOME = "RECSYS_HOME"
ENV_EVENT_STORE = "RECSYS_EVENT_STORE_URL"
ENV_LAKE = "RECSYS_LAKE_ROOT"
ENV_TRACKING = "MLFLOW_TRACKING_URI"
ENV_ARTIFACTS = "RECSYS_ARTIFACT_ROOT"
ENV_REGISTERED_MODEL = "RECSYS_REGISTERED_MODEL"
ENV_TRAIN_DEVICE = "RECSYS_TRAIN_DEVICE"
_DEVICE = re.compile(r"cpu|auto|cuda(:\d+)?")


@dataclass(frozen=True)
class Settings:
    """Where every piece of state lives; build it with ``Settings.from_env()``."""

    home: Path
    event_store_url: str
    lake_root: LakePath  # a local folder or an fsspec URL (``s3://bucket/lake``)
    tracking_uri: str
    artifact_root: str | None  # None: the tracking server's own (``mlflow server``'s proxy)
    registered_model: str = REGISTERED_MODEL
    experiment: str = EXPERIMENT
    # Where the pipeline trains: "cpu", "cuda", "cuda:N", or "auto" (a GPU when torch sees one).
    train_device: str = "cpu"

    def __repr__(self) -> str:  # settings get logged: never with a password in a URL
        fields = ", ".join(
            f"{f.name}={redact(v) if isinstance(v, str) else v!r}"
            for f in dataclasses.fields(self)
            for v in [getattr(self, f.name)]
        )
        return f"Settings({fields})"

    def __post_init__(self) -> None:
        if not _DEVICE.fullmatch(self.train_device):
            raise ValueError(
                f"{ENV_TRAIN_DEVICE}={self.train_device!r}: expected cpu, cuda, cuda:N or auto"
            )

    def as_env(self) -> dict[str, str]:
        """The environment variables that make ``from_env`` rebuild these settings in a child
        process (an unset artifact root stays unset)."""
        env = {
            ENV_HOME: str(self.home),
            ENV_EVENT_STORE: self.event_store_url,
            ENV_LAKE: str(self.lake_root),
            ENV_TRACKING: self.tracking_uri,
            ENV_REGISTERED_MODEL: self.registered_model,
            ENV_TRAIN_DEVICE: self.train_device,
        }
        if self.artifact_root is not None:
            env[ENV_ARTIFACTS] = self.artifact_root
        return env

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        home = Path(env.get(ENV_HOME, ".recsys")).expanduser().resolve()
        tracking = env.get(ENV_TRACKING) or f"sqlite:///{home / 'mlflow.db'}"
        # A tracking server stores artifacts where it was told to (and proxies uploads): a local
        # folder default would only exist on this machine.
        local_artifacts = None if tracking.startswith(("http:", "https:")) else home / "mlartifacts"
        return cls(
            home=home,
            event_store_url=env.get(ENV_EVENT_STORE) or f"sqlite:///{home / 'events.db'}",
            lake_root=lake_path(env.get(ENV_LAKE) or home / "lake"),
            tracking_uri=tracking,
            artifact_root=env.get(ENV_ARTIFACTS) or (local_artifacts and local_artifacts.as_uri()),
            registered_model=env.get(ENV_REGISTERED_MODEL) or REGISTERED_MODEL,
            train_device=env.get(ENV_TRAIN_DEVICE) or "cpu",
        )


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the SASRec-style model. On warm start it is read from the checkpoint."""

    max_len: int = 200  # most recent items the model attends to
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.3


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Full retrain and incremental fine-tune are two presets of this one class."""

    mode: Literal["full", "incremental"] = "full"
    # The budget, not a plateau, ends a full retrain: near 3 minutes on 2 cores, the same on
    # similar data (decisions.md: "Epoch budget").
    epochs: int = 80
    batch_size: int = 64
    # Peak, reached after the warm-up; 1e-3 stalled on 1M events (decisions.md: "Learning rate").
    lr: float = 3e-3
    weight_decay: float = 0.01
    # Validation checks without improvement before early stopping; a shorter wait stops on noise
    # (decisions.md: "Early-stopping patience").
    patience: int = 10
    # Optimizer steps before early stopping may end a run: a transformer's score can stall before
    # attention pays off (decisions.md: "Minimum steps before early stopping").
    min_steps: int = 1000
    eval_every: int = 2  # epochs between validation checks
    seed: int = 42
    max_seconds: float = 600.0  # hard wall-clock cap on one training run
    loss: Literal["full", "sampled"] = "full"  # softmax over the whole catalogue, or sampled
    n_negatives: int = 1024  # shared uniform negatives per batch when loss="sampled"
    replay_ratio: float = 1.0  # incremental: old sequences replayed per new sequence
    # Warm start: scale the checkpoint's weight matrices and embeddings (never norms, biases or new
    # items' rows) by this first; 1.0: as saved (decisions.md: "Warm-start shrink").
    warm_shrink: float = 1.0
    # After the warm-up: "constant", or "cosine" decay from ``lr`` to 0 at ``epochs``; cosine
    # scored lower (decisions.md: "Learning-rate schedule").
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_epochs: float = 5.0  # linear warm-up to ``lr`` (decisions.md: "Learning rate")
    # Validate and keep an exponential moving average of the weights, with this half-life in
    # epochs, which do not vary with the data as steps do (0: the raw weights).
    ema_halflife_epochs: float = 0.0  # decisions.md: "Weight averaging and item dropout off"
    # Share of input items hidden from attention in each training step, targets and the latest
    # item kept; 0: off (decisions.md: "Weight averaging and item dropout off").
    item_dropout: float = 0.0
    # "bf16": steps under bf16 autocast (weights and optimizer moments stay fp32); slower at
    # d_model 64, where kernel launches bound a step (decisions.md: "Precision: fp32").
    precision: Literal["fp32", "bf16"] = "fp32"
    # torch.compile the forward pass (dynamic shapes: batch widths vary); paid only on full-length
    # windows (decisions.md: "torch.compile off").
    compile: bool = False
    # Leave each position's seen items (its target excepted) out of its softmax and negatives:
    # served lists never hold them; off where they do (exclude_seen=false).
    mask_seen: bool = True  # decisions.md: "Seen items masked in training"

    @classmethod
    def finetune(cls, **overrides: Any) -> TrainConfig:
        """Preset for incremental fine-tuning: short, gentle, warm-started from the champion.

        Each override says why; a quoted name is the decisions.md entry with the figures.
        """
        base = dict(
            mode="incremental",  # warm-started from the champion, on the new users plus a replay
            epochs=2,  # two passes over new and replayed users ("Fine-tune epochs and replay")
            lr=1e-3,  # a third of the full retrain's peak ("Fine-tune learning rate")
            warmup_epochs=0.0,  # the parent is trained already: no warm-up
            eval_every=2,  # one validation check in two epochs, at the end...
            patience=2,  # ...so early stopping never cuts the two epochs short
            min_steps=0,  # attention has paid off in the parent: no wait before stopping
            replay_ratio=10.0,  # old users per new one; as good as 30 ("Fine-tune replay ratio")
            warm_shrink=0.9,  # shrink the parent's weights first ("Warm-start shrink")
        )
        base.update(overrides)
        return cls(**base)


@dataclass(frozen=True)
class EvalConfig:
    k: int = 10
    min_events: int = 3  # users with fewer events are not evaluated (need train, valid, test)


@dataclass(frozen=True)
class ServingConfig:
    """How the API answers: list sizes, cold start, exploration, caches and request limits."""

    default_k: int = 10
    max_k: int = 100  # larger ``k`` is a 422: a list is scored and logged per request
    max_history: int = 200  # item ids accepted in an anonymous session (POST /recommendations)
    max_body_bytes: int = 64 * 1024  # larger request bodies are refused with 413
    exploration_share: float = 0.1  # share of each list given to items the model has no row for
    cold_start_size: int = 100  # trending list topped up to this many with all-time favourites
    trending_days: float = 7.0  # popularity window, ending at the newest event in the store
    trending_pool: int = 10_000  # most popular items considered (cold start and exploration)
    trending_refresh_s: float = 60.0  # how often the popularity list is recomputed
    cache_users: int = 10_000  # users whose just-posted events are kept in process
    cache_events: int = 50  # just-posted events kept per user
    cache_ttl_s: float = 300.0  # how long a posted event stays in the in-process cache
    impression_queue: int = 10_000  # served lists waiting to be written; beyond that, dropped
    store_timeout_s: float = 2.0  # longest a store connection or statement may take (PostgreSQL)
    store_retry_s: float = 5.0  # after a failed read the store is left alone this long
    # Histories whose last hidden state the served model keeps (``recommender.StateCache``): a
    # repeated history skips the forward pass; 0 disables it (decisions.md: "State cache").
    state_cache: int = 10_000
    # Intra-op threads of the server process (``recsys serve`` sets it; 0 keeps torch's default);
    # for more cores, run more processes (decisions.md: "Torch threads").
    torch_threads: int = 1
    # The server's event loop: under load uvloop left some connections waiting.
    event_loop: Literal["asyncio", "uvloop"] = "asyncio"  # decisions.md: "Event loop: asyncio"
    # uvicorn's line per request: impressions and /metrics record each request already.
    access_log: bool = False  # decisions.md: "Access log off"
    # Who may call: API keys (``recsys keys create``) with scopes; ``recsys serve --no-auth`` off.
    require_keys: bool = True
    key_cache_s: float = 5.0  # a verified (or refused) key is trusted this long: revocation lag
    rate_per_key: float = 200.0  # requests a second per key, sustained (429 beyond)...
    rate_burst: float = 400.0  # ...with bursts up to this many
    max_in_flight: int = 256  # requests a process works on at once (429 beyond)

    def __post_init__(self) -> None:
        if self.event_loop not in ("asyncio", "uvloop"):
            raise ValueError(f"event_loop must be 'asyncio' or 'uvloop', got {self.event_loop!r}")
        if not 0.0 <= self.exploration_share <= 1.0:
            raise ValueError(f"exploration_share must be in [0, 1], got {self.exploration_share}")
        if not 1 <= self.default_k <= self.max_k:
            raise ValueError(f"need 1 <= default_k ({self.default_k}) <= max_k ({self.max_k})")
        if self.state_cache < 0:
            raise ValueError(f"state_cache must be >= 0, got {self.state_cache}")
        if self.rate_per_key <= 0 or self.rate_burst < 1 or self.max_in_flight < 1:
            raise ValueError("rate_per_key must be > 0, rate_burst >= 1 and max_in_flight >= 1")


@dataclass(frozen=True)
class DriftCheck:
    """One statistical check of a partition against the partitions before it."""

    low: float | None = None
    high: float | None = None
    action: Literal["quarantine", "warn"] = "warn"


@dataclass(frozen=True)
class GatePolicy:
    """What the validation gate does with rows that fail a row-level expectation: they go to the
    partition's reject table and the rest is published, unless there are so many that the feed
    itself is broken, when the whole partition is quarantined."""

    max_bad_row_share: float = 0.01

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_bad_row_share <= 1.0:
            raise ValueError(f"max_bad_row_share must be in [0, 1], got {self.max_bad_row_share}")


@dataclass(frozen=True)
class DriftPolicy:
    """Statistical checks of each partition against the previous ones: the one place to tune them.

    Daily volumes swing widely and users arrive in bursts, so volume and new users only warn; a
    flood of unknown items or a changed event-type mix is a broken feed and quarantines
    (decisions.md: "Drift thresholds").
    """

    window: int = 7  # previous partitions that define "normal" volume and event-type mix
    min_history: int = 3  # with fewer previous partitions the checks are skipped
    row_ratio: DriftCheck = DriftCheck(low=0.01, high=20.0, action="warn")  # rows / median rows
    new_user_share: DriftCheck = DriftCheck(high=1.0, action="warn")
    new_item_share: DriftCheck = DriftCheck(high=0.5, action="quarantine")
    event_type_shift: DriftCheck = DriftCheck(high=0.5, action="quarantine")  # total variation


@dataclass(frozen=True)
class PipelineConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)  # full retrain
    finetune: TrainConfig = field(default_factory=TrainConfig.finetune)  # incremental
    eval: EvalConfig = field(default_factory=EvalConfig)
    drift: DriftPolicy = field(default_factory=DriftPolicy)
    gate: GatePolicy = field(default_factory=GatePolicy)

    def training(self, mode: str) -> TrainConfig:
        """The training preset of a mode: ``train`` (full) or ``finetune`` (incremental)."""
        if mode not in ("full", "incremental"):
            raise ValueError(f"mode must be 'full' or 'incremental', not {mode!r}")
        return self.train if mode == "full" else self.finetune

    def with_training(self, mode: str, **changes: Any) -> PipelineConfig:
        """A copy whose preset for ``mode`` has ``changes`` (TrainConfig fields) applied."""
        preset = dataclasses.replace(self.training(mode), **changes)  # TypeError: no such field
        return dataclasses.replace(self, **{"train" if mode == "full" else "finetune": preset})

    def with_epochs(self, mode: str, epochs: int) -> PipelineConfig:
        """A copy whose preset for ``mode`` trains for at most ``epochs`` epochs."""
        preset = dataclasses.replace(self.training(mode), epochs=epochs)
        return dataclasses.replace(self, **{"train" if mode == "full" else "finetune": preset})


def to_dict(cfg: Any) -> dict[str, Any]:
    """Flatten a (nested) config dataclass into ``section.key -> value`` for MLflow params."""

    def flatten(prefix: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            return {prefix: value}
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else k, v))
        return out

    return flatten("", dataclasses.asdict(cfg))
