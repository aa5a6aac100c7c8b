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
    # The budget of a full retrain, which on data like MovieLens-100K is what ends it: there
    # the validation score still rises at epoch 130 (every-epoch learning curves of the busiest
    # week's seven daily retrains, seed 43, and of three leave-last-out retrains, seeds 42-44),
    # so the budget, not a plateau, sets what a retrain costs, and the same budget makes
    # retrains on similar data cost the same. On those three retrains the checkpoint chosen on
    # validation within 80 epochs scored test NDCG@10 0.1230 / 0.1246 / 0.1241 (HR@10 0.2248 /
    # 0.2280 / 0.2333), within 100 epochs 0.1275 / 0.1246 / 0.1215 (0.2248 / 0.2280 / 0.2269)
    # for a quarter more time; 80 keeps a retrain near 3 minutes on 2 cores.
    epochs: int = 80
    batch_size: int = 64
    # Peak learning rate, reached after ``warmup_epochs``. bench/quality.py, MovieLens-100K, 3
    # seeds: NDCG@10 0.1120 at 3e-3 with 5 warm-up epochs, 0.1067 at 1e-3 with none; on the 1M
    # synthetic events (one seed) 0.6295, where 1e-3 had stalled after epoch 2 at 0.6219.
    lr: float = 3e-3
    weight_decay: float = 0.01
    # Validation checks without improvement before early stopping. With about 1,000 validation
    # users a check's NDCG@10 moves by about 0.005 while the curve still rises by about 0.0005
    # an epoch, so a short wait stops on noise: 5 checks of 2 epochs stopped the ten curves
    # above anywhere from 66 to 112 epochs (the one at 66 at test HR@10 0.2036), so one
    # retrain could cost 1.6 times another on nearly the same data (68 and 112 epochs in one
    # week). 10 checks stopped none of the ten before 98 epochs: within the 80-epoch budget,
    # early stopping ends only a real plateau.
    patience: int = 10
    # Early stopping waits for this many optimizer steps: a transformer's validation score can
    # stall for a while before attention pays off. A count of steps, not epochs, since an
    # epoch is 18 steps on MovieLens-100K and over 300 on 1M events.
    min_steps: int = 1000
    eval_every: int = 2  # epochs between validation checks
    seed: int = 42
    max_seconds: float = 600.0  # hard wall-clock cap on one training run
    loss: Literal["full", "sampled"] = "full"  # softmax over the whole catalogue, or sampled
    n_negatives: int = 1024  # shared uniform negatives per batch when loss="sampled"
    replay_ratio: float = 1.0  # incremental: old sequences replayed per new sequence
    # Warm start: multiply the checkpoint's weight matrices and embeddings by this before the
    # first step, as the "shrink" of Ash & Adams (2020), "On Warm-Starting Neural Network
    # Training": a network trained to convergence learns new data worse than a fresh one, and
    # shrinking its weights gives some of that back. 1.0 starts from the weights as saved;
    # norms, biases and the rows of new items are never scaled.
    warm_shrink: float = 1.0
    # Learning rate over training: "constant", or "cosine" decay from ``lr`` to 0 at ``epochs``
    # after ``warmup_epochs`` of linear warm-up (the schedule is laid out over ``epochs``).
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_epochs: float = 5.0
    # Validate and keep an exponential moving average of the weights, with this half-life in
    # epochs (0: the raw weights). Steps per epoch vary with the data; epochs do not.
    ema_halflife_epochs: float = 0.0
    # Share of input items hidden from attention in each training step (augmentation; targets
    # and the most recent item are kept). 0 disables it.
    item_dropout: float = 0.0
    # Arithmetic of the training steps: "bf16" runs them under bf16 autocast (weights and
    # optimizer moments stay fp32). It pays for wide models only: at d_model 64 a step is bound
    # by kernel launches, and on an H200 (bench/throughput.py, batch 64, max_len 200) bf16 did
    # 0.53M targets/s on MovieLens-100K against 0.98M in fp32, and 1.58M against 1.68M on
    # full-length windows.
    precision: Literal["fp32", "bf16"] = "fp32"
    # torch.compile the forward pass (dynamic shapes: batch widths vary). Off by default: on the
    # H200 it took 50-70 s to compile and then gave 2.23M targets/s against 1.68M on
    # full-length windows, but 0.92M against 0.98M on MovieLens-100K's shorter ones.
    compile: bool = False
    # Leave the items each position has already seen (its own target excepted) out of its
    # softmax: serving and evaluation never recommend a seen item, so the model need not learn
    # to rank them low. With loss="sampled", no seen item is drawn as a negative. On
    # MovieLens-100K (bench/quality.py, 3 seeds) NDCG@10 0.1270 and HR@10 0.2301 with it, 0.1120
    # and 0.2117 without. Turn it off where seen items are served again (exclude_seen=false):
    # the model is then never taught how a seen item ranks.
    mask_seen: bool = True

    @classmethod
    def finetune(cls, **overrides: Any) -> TrainConfig:
        """Preset for incremental fine-tuning: short, gentle, warm-started from the champion.

        lr 1e-3, a third of the full retrain's peak: bench/incremental.py's last 7 days, fine-tunes
        from two day-one retrains (seeds 42, 43), gave NDCG@10 0.1264 / 0.1256 at 1e-3 against
        0.1193 / 0.1233 at 3e-4, 0.1234 / 0.1254 at 5e-4 and 0.1226 / 0.1190 at 2e-3 (the
        day-one models alone: 0.1175 / 0.1249); 3e-3 did worse again on the busiest week.

        Two epochs over the new users and a broad replay of old users (30 per new one before the
        shrink, 10 since): the new data is learnt from a broad view of the old, not from a near-even
        mix. Fine-tuning six days from each seed's cached first-day retrain (bench/incremental.py's
        functions), the gain over the first-day model alone (NDCG@10) went from +0.0023 / +0.0039 /
        +0.0024 (seeds 43 / 45 / 44) on the busiest week and +0.0052 / +0.0002 / +0.0029 (seeds
        42-44) on the last week, with 1 replayed per new user and up to 10 early-stopped epochs, to
        +0.0036 / +0.0061 / +0.0056 and +0.0074 / -0.0002 / +0.0075; the six fine-tunes took 6-10 s
        instead of 3-6. Replaying every old user did a little better again (+0.0047 / +0.0047 /
        +0.0060 and +0.0098 / +0.0005 / +0.0076) at about 15 s, but its cost grows with the whole
        history.

        The parent's weights shrunk by 0.9 first (``warm_shrink``): at the same cost, six days
        of these fine-tunes from each seed's cached first-day retrain scored NDCG@10 +0.0031 /
        +0.0030 / +0.0039 / +0.0018 / +0.0018 (busiest week, seeds 42-46) and +0.0026 / +0.0046
        / +0.0033 (last week, seeds 42-44) above the same without it, 8 of 8 ahead. Over five
        of those seed-weeks (mean NDCG@10 0.1239 without) 0.85 (0.1266) and 0.8 plus noise of
        std 0.01 (0.1251) did no better than 0.9 (0.1270); 0.7 lost 0.004 on seed 43. Shrinking
        only the item embedding gained less (+0.0018 / +0.0028 / +0.0015 / +0.0004 on seeds 43,
        42, 46 of the busiest week and 44 of the last, against +0.0030 / +0.0031 / +0.0018 /
        +0.0033), only the other weights nothing (+0.0024 / +0.0001 / -0.0001 / -0.0021).

        With the shrink, 10 replayed users per new one do as well as 30 at half the cost: the same
        replays on eight seed-weeks (busiest week seeds 43 / 45 / 44 / 46 / 47, last week 42 / 44 /
        43; first-day retrains of 2 December) gave NDCG@10 0.1261 / 0.1295 / 0.1278 / 0.1318 /
        0.1272, 0.1389 / 0.1349 / 0.1281 against 0.1267 / 0.1295 / 0.1271 / 0.1315 / 0.1288, 0.1348
        / 0.1355 / 0.1266 with 30 (mean +0.0005), and the six fine-tunes took 7.5-8.4 s instead of
        16.4-18.2 s on the busiest week, 4.0-4.3 s instead of 8.8-9.7 s on the last. At most 400
        replayed users, whatever the ratio, did no better (0.1254 / 0.1284 / 0.1280, 0.1348 / 0.1355
        / 0.1266 on the first six).
        """
        base = dict(
            mode="incremental", epochs=2, lr=1e-3, warmup_epochs=0.0, eval_every=2, patience=2,
            min_steps=0, replay_ratio=10.0, warm_shrink=0.9,
        )  # fmt: skip
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
    # Histories whose last hidden state the served model keeps (``recommender.StateCache``): a
    # user asking again before their next event skips the forward pass. Up to 2 KB each at
    # max_len 200 and d_model 64 (20 MB for 10,000); 0 disables it.
    state_cache: int = 10_000
    # Intra-op threads of the server process (``recsys serve`` sets it; 0 keeps torch's default).
    # On a busy machine torch's own threads stall for ~200 ms; for more cores, run more processes.
    torch_threads: int = 1
    # The server's event loop. asyncio by default: under load uvloop leaves some connections
    # waiting (wrk, 32 clients, no state cache: p99 172-255 ms with uvloop, 64-76 with asyncio;
    # the first measurement, before gc.freeze, gave 418 against 67).
    event_loop: Literal["asyncio", "uvloop"] = "asyncio"
    # uvicorn's access log, a line per request. Off by default: every served list is already
    # logged as an impression (request id, user, items, version), /metrics counts requests by
    # route and status, and the line cost up to 13% of throughput (bench/serve.py-style wrk runs).
    access_log: bool = False

    def __post_init__(self) -> None:
        if self.event_loop not in ("asyncio", "uvloop"):
            raise ValueError(f"event_loop must be 'asyncio' or 'uvloop', got {self.event_loop!r}")
        if not 0.0 <= self.exploration_share <= 1.0:
            raise ValueError(f"exploration_share must be in [0, 1], got {self.exploration_share}")
        if not 1 <= self.default_k <= self.max_k:
            raise ValueError(f"need 1 <= default_k ({self.default_k}) <= max_k ({self.max_k})")
        if self.state_cache < 0:
            raise ValueError(f"state_cache must be >= 0, got {self.state_cache}")


@dataclass(frozen=True)
class DriftCheck:
    """One statistical check of a partition against the partitions before it."""

    low: float | None = None
    high: float | None = None
    action: Literal["quarantine", "warn"] = "warn"


@dataclass(frozen=True)
class DriftPolicy:
    """Statistical checks of each partition against the previous ones: the one place to tune them.

    Defaults suit replayed public data as well as live traffic: daily volumes swing widely
    (MovieLens-100K has days at 1% and at 580% of the weekly median), and users arrive in bursts,
    so volume and new users only warn; a flood of unknown items or a changed event-type mix is a
    broken feed and quarantines.
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

    def training(self, mode: str) -> TrainConfig:
        """The training preset of a mode: ``train`` (full) or ``finetune`` (incremental)."""
        if mode not in ("full", "incremental"):
            raise ValueError(f"mode must be 'full' or 'incremental', not {mode!r}")
        return self.train if mode == "full" else self.finetune

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
