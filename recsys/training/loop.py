"""Training: one ``train()`` for both full retraining and incremental fine-tuning.

Full mode builds a fresh ``SASRec`` from ``ModelConfig``. Incremental mode (``init`` given) takes
the architecture and weights from the checkpoint, like nanoGPT's ``init_from``, grows the item
embedding if the catalogue grew, and continues with the ``TrainConfig.finetune()`` preset.

Selection uses the validation split only; the test split is never read here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from recsys.config import ModelConfig, TrainConfig
from recsys.data.splits import Split
from recsys.evaluation.metrics import evaluate_scores
from recsys.model.sasrec import Checkpoint, SASRec, score_contexts
from recsys.training.losses import batch_loss, dense_loss_sum, seen_items
from recsys.training.optim import (
    WeightAverage,
    init_model,
    lr_at,
    make_optimizer,
    warm_start_optimizer,
)
from recsys.training.progress import EpochReport, Progress
from recsys.training.state import TrainingState, fingerprint, to_cpu
from recsys.training.windows import build_windows, drop_items, length_batches

log = logging.getLogger(__name__)

VALID_K = 10
SELECT_METRIC = f"ndcg_at_{VALID_K}"  # checkpoint selection and early stopping
EPOCH_KEYS = ("epoch", "loss")  # a history row's own keys; the rest are validation metrics
GRAD_CLIP = 1.0


@dataclass
class TrainResult:
    """The best checkpoint (on validation) and how training went."""

    checkpoint: Checkpoint
    history: list[dict[str, Any]]  # one entry per validation check
    best_epoch: int
    best_valid: dict[str, float]
    seconds: float  # wall time of the whole call
    tokens_per_s: float  # training targets per second of optimisation (validation excluded)
    losses: list[float]  # mean training loss per epoch
    tokens: int = 0  # training targets processed in all (every process, every epoch)
    resumed_after_epoch: int = 0  # > 0: continued a killed run's saved state after that epoch


def _world() -> tuple[int, int]:
    """(rank, world size) of the ``torch.distributed`` group, ``(0, 1)`` outside one."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _Hidden(torch.nn.Module):
    """``SASRec.hidden`` as a module's ``forward``, so DDP can wrap it."""

    def __init__(self, model: SASRec) -> None:
        super().__init__()
        self.model = model

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        return self.model.hidden(seqs)


def _dense_steps(device: torch.device, cfg: TrainConfig) -> bool:
    """Whether ``_run_epoch`` takes the GPU form of a step (see there)."""
    return device.type == "cuda" and cfg.loss == "full"


def _autocast(device: torch.device, cfg: TrainConfig) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast when ``cfg.precision`` is "bf16", else nothing."""
    if cfg.precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _run_epoch(
    model: SASRec,
    net: torch.nn.Module,
    opt: torch.optim.Optimizer,
    data: torch.Tensor,
    cfg: TrainConfig,
    gen: torch.Generator,
    deadline: float,
    epoch: int = 1,
    ema: WeightAverage | None = None,
) -> tuple[float, int]:
    """One pass over ``data`` ``(N, T + 1)`` in a seeded random order: (mean loss, n targets).

    ``net`` is ``model``'s hidden-state forward, wrapped in DDP when training in several
    processes: each process then takes every ``world``-th batch of the same seeded order, and
    all take the same number of batches (DDP all-reduces gradients at every step).

    On a GPU with the full softmax the step is written so that the host never waits for the
    device: the data is moved once per epoch, the loss covers every position (padding ignored)
    and the epoch's loss and target count are read back once, at its end.
    """
    model.train()
    rank, world = _world()
    device = model.item_emb.weight.device
    lengths = (data != 0).sum(dim=1)  # (N,)
    batches = length_batches(lengths, cfg.batch_size, gen)
    # Batches of short windows carry fewer targets: each batch's mean loss is weighted by its
    # number of targets over the mean number, so that every target weighs the same in an epoch
    # (length bucketing would otherwise weigh a target of a short history up to T / 8 times more).
    real = int(((data[:, :-1] != 0) & (data[:, 1:] != 0)).sum())
    targets_per_batch = max(real, 1) / len(batches)
    if world > 1:
        if len(batches) < world:
            raise ValueError(f"{len(batches)} batches cannot be shared by {world} processes")
        batches = batches[rank : len(batches) // world * world : world]
    dense = _dense_steps(device, cfg)
    if dense:
        on_device = data.to(device)  # (N, T + 1)
        sizes = [len(idx) for idx in batches]
        device_batches = torch.cat(batches).to(device).split(sizes)
        sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, targets
    autocast = _autocast(device, cfg)
    total_loss, n_tokens = 0.0, 0
    for step, idx in enumerate(batches):
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, epoch - 1 + step / len(batches))
        width = int(lengths[idx].max())
        if dense:
            batch = on_device[device_batches[step], -width:]  # (B, W)
        else:
            batch = data[idx, -width:]  # (B, W): columns that are padding in every row dropped
            batch = batch.to(device, non_blocking=True)
        x, y = batch[:, :-1], batch[:, 1:]  # (B, W - 1) inputs and next-item targets
        sel = (x != 0) & (y != 0)  # predict only from a real item
        seen = None
        if cfg.mask_seen:  # (B, W - 1, W - 1) for the dense loss, (M, W - 1) for the others
            seen = seen_items(x) if dense else seen_items(x, sel)
        if cfg.item_dropout > 0:
            x = drop_items(x, cfg.item_dropout)
        opt.zero_grad(set_to_none=True)
        if dense:
            with autocast:
                loss_sum = dense_loss_sum(net(x), model.item_emb.weight, y, sel, seen)
            (loss_sum / targets_per_batch).backward()
            sums += torch.stack([loss_sum.detach().double(), sel.sum().double()])
        else:
            with autocast:
                hidden = net(x)[sel]  # (M, D)
            hidden = hidden.to(torch.promote_types(hidden.dtype, torch.float32))  # bf16 -> fp32
            loss = batch_loss(model, hidden, y[sel], cfg, seen)
            n = int(sel.sum())
            (loss * (n / targets_per_batch)).backward()
            total_loss += float(loss.detach()) * n
            n_tokens += n
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        if ema is not None:
            ema.update(model)
        if world == 1 and time.perf_counter() >= deadline:
            break  # several processes stop together, at the end of an epoch
    if dense:
        total_loss, n_tokens = sums[0].item(), int(sums[1].item())
    return total_loss / max(n_tokens, 1), n_tokens


def _validate(model: SASRec, split: Split, n_items: int) -> dict[str, float] | None:
    if not split.valid_target:
        return None
    scores = score_contexts(model, split.valid_context, n_items)  # (N, n_items + 1)
    return evaluate_scores(scores, split.valid_context, split.valid_target, k=VALID_K)


def _fit(
    model: SASRec,
    opt: torch.optim.AdamW,
    data: torch.Tensor,
    split: Split,
    n_items: int,
    cfg: TrainConfig,
    t0: float,
    state_path: Path | None,
    progress: Progress | None = None,
) -> TrainResult:
    """The epoch loop: train, validate every ``eval_every`` epochs, keep the best, stop early."""
    rank, world = _world()
    net: torch.nn.Module = _Hidden(model)
    if world > 1:
        device = model.item_emb.weight.device
        ids = [device] if device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=ids)  # syncs weights
    if cfg.compile:
        net = torch.compile(net, dynamic=True)  # type: ignore[assignment]
    gen = torch.Generator().manual_seed(cfg.seed)  # batch order
    st = TrainingState.resume(state_path, fingerprint(data, model, cfg, world), model, opt, gen)
    resumed_after = st.epoch
    steps_per_epoch = math.ceil(len(data) / cfg.batch_size) // world or 1
    ema = None
    if cfg.ema_halflife_epochs > 0:
        ema = WeightAverage(model, cfg.ema_halflife_epochs * steps_per_epoch)
        if st.ema:  # resumed: the average as it was (saved states load on the CPU)
            device = model.item_emb.weight.device
            ema.shadow = {k: v.to(device) for k, v in st.ema.items()}
            ema.updates = st.ema_updates
    t0 -= st.elapsed
    deadline = t0 + cfg.max_seconds
    for epoch in range(st.epoch + 1, cfg.epochs + 1):
        if st.done:
            break
        t_epoch = time.perf_counter()
        loss, n_tokens = _run_epoch(model, net, opt, data, cfg, gen, deadline, epoch, ema)
        st.train_seconds += time.perf_counter() - t_epoch
        st.total_tokens += n_tokens
        st.losses.append(loss)
        st.epoch = epoch
        out_of_time = _agree(time.perf_counter() >= deadline, model.item_emb.weight.device)
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs or out_of_time:
            with ema.applied(model) if ema is not None else contextlib.nullcontext():
                _check(st, model, opt, split, n_items, cfg, loss, t0)
            if st.bad_checks >= cfg.patience and epoch * steps_per_epoch >= cfg.min_steps:
                log.info("early stop at epoch %d, best epoch %d", epoch, st.best_epoch)
                st.done = True
            elif out_of_time:
                log.warning("max_seconds=%.0f reached at epoch %d", cfg.max_seconds, epoch)
                st.done = True
        st.elapsed = time.perf_counter() - t0
        if progress is not None and rank == 0:
            checks = [h for h in st.history if SELECT_METRIC in h]
            latest = checks[-1][SELECT_METRIC] if checks else None
            now = checks[-1] if checks and checks[-1]["epoch"] == epoch else None
            valid = None if now is None else {k: v for k, v in now.items() if k not in EPOCH_KEYS}
            progress(EpochReport(epoch, cfg.epochs, loss, latest, st.elapsed, cfg.max_seconds,
                                 valid))  # fmt: skip
        if state_path is not None and rank == 0:
            if ema is not None:
                st.ema, st.ema_updates = ema.shadow, ema.updates
            st.save(state_path, model, opt, gen)
    checkpoint = Checkpoint(
        model_state=st.best_state,
        model_config=model.cfg,
        n_items=n_items,
        train_config=dataclasses.asdict(cfg),
        optimizer_state=st.best_opt,
        metadata={"best_epoch": st.best_epoch, "valid": st.best_valid, "world_size": world},
    )
    return TrainResult(
        checkpoint=checkpoint,
        history=st.history,
        best_epoch=st.best_epoch,
        best_valid=st.best_valid,
        seconds=time.perf_counter() - t0,
        tokens_per_s=st.total_tokens * world / max(st.train_seconds, 1e-9),
        tokens=st.total_tokens * world,
        losses=st.losses,
        resumed_after_epoch=resumed_after,
    )


def _agree(flag: bool, device: torch.device) -> bool:
    """``flag`` as rank 0 sees it, on every process (itself outside a process group)."""
    if _world()[1] == 1:
        return flag
    out = torch.tensor([int(flag)], device=device)  # nccl broadcasts GPU tensors only
    torch.distributed.broadcast(out, src=0)
    return bool(out.item())


def _check(st: TrainingState, model: SASRec, opt: torch.optim.Optimizer, split: Split, n_items: int,
           cfg: TrainConfig, loss: float, t0: float) -> None:  # fmt: skip
    """One validation check: record it, keep the best state, count checks without progress.

    Every process validates the same (all-reduced) weights, so all take the same decisions.
    """
    metrics = _validate(model, split, n_items)  # None without validation users
    st.history.append({"epoch": st.epoch, "loss": loss, **(metrics or {})})
    improved = metrics is None or not st.best_valid or (
        metrics[SELECT_METRIC] > st.best_valid[SELECT_METRIC]
    )  # fmt: skip
    log.info(
        "epoch %d loss %.4f valid %s %.4f%s (%.1fs)",
        st.epoch, loss, SELECT_METRIC, (metrics or {}).get(SELECT_METRIC, float("nan")),
        " *" if improved else "", time.perf_counter() - t0,
    )  # fmt: skip
    if improved:
        st.best_valid, st.best_epoch, st.bad_checks = dict(metrics or {}), st.epoch, 0
        st.best_state = to_cpu(model.state_dict())
        st.best_opt = to_cpu(opt.state_dict())
    else:
        st.bad_checks += 1


def resolve_device(name: str) -> torch.device:
    """The torch device for a ``Settings.train_device`` name: "auto" is the first GPU when torch
    sees one, else the CPU. Asking for a GPU that torch does not see is an error, not a silent
    fall-back to a training 20 times slower."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise RuntimeError(f"training device {name!r} asked for, but torch sees {count} GPUs")
    return device


def train(
    split: Split,
    n_items: int,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    init: Checkpoint | None = None,
    state_path: str | Path | None = None,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
) -> TrainResult:
    """Train on ``split.train``, select on ``split.valid_*``, return the best checkpoint.

    With ``init`` the run is a warm start: the architecture comes from ``init`` (``model_cfg`` is
    ignored), the weights and optimizer moments are loaded and the catalogue is grown to
    ``n_items``. Validation NDCG@10 is computed every ``eval_every`` epochs and at the last
    epoch; training stops after ``patience`` checks without improvement, ``epochs`` epochs or
    ``max_seconds``. Without validation users the last state is returned. Seeded by
    ``train_cfg.seed``; the caller's global torch RNG state is left as it was.

    With ``state_path`` the loop's whole state (weights, optimizer, RNGs, history) is written
    there after every epoch, and a call that finds a state for the same data and config there
    resumes after its last epoch: a killed training loses at most one epoch. Inside a
    ``torch.distributed`` process group (``torchrun``) each process trains on its share of the
    batches under DDP and all return the same checkpoint. ``device`` is where the model
    trains (``"cuda:0"``...); the checkpoint's tensors always come back on the CPU. ``progress``
    is called after every epoch (on rank 0) with an ``EpochReport``.
    """
    t0 = time.perf_counter()
    if train_cfg.epochs < 1 or train_cfg.eval_every < 1 or train_cfg.patience < 1:
        raise ValueError("epochs, eval_every and patience must be >= 1")
    if train_cfg.schedule not in ("constant", "cosine") or train_cfg.warmup_epochs < 0:
        raise ValueError(f"schedule must be constant or cosine, warmup_epochs >= 0: {train_cfg}")
    if train_cfg.loss not in ("full", "sampled") or train_cfg.n_negatives < 1:
        raise ValueError(f"loss must be 'full' or 'sampled' with n_negatives >= 1: {train_cfg}")
    if not 0.0 <= train_cfg.item_dropout < 1.0 or train_cfg.ema_halflife_epochs < 0:
        raise ValueError(f"need 0 <= item_dropout < 1 and ema_halflife_epochs >= 0: {train_cfg}")
    if train_cfg.precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16': {train_cfg}")
    if train_cfg.mode == "incremental" and init is None:
        raise ValueError("mode='incremental' needs an init checkpoint to warm-start from")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train_cfg.seed)  # fresh weights or new item rows, and dropout
        model = init_model(n_items, model_cfg, init, train_cfg.warm_shrink).to(device)
        opt = make_optimizer(model, train_cfg)  # after grow_items: it holds the new embedding
        if init is not None and init.optimizer_state is not None:
            warm_start_optimizer(opt, init.optimizer_state, train_cfg)
        data = build_windows(split.train, model.cfg.max_len)  # (N, max_len + 1)
        if len(data) == 0:
            raise ValueError("no training sequence has two or more items")
        if int(data.max()) > n_items:
            raise ValueError(f"training data has item indices above n_items={n_items}")
        log.info(
            "training %s: %d windows, %d items, %d epochs max",
            "warm-started" if init is not None else "from scratch",
            len(data), n_items, train_cfg.epochs,
        )  # fmt: skip
        path = Path(state_path) if state_path is not None else None
        result = _fit(model, opt, data, split, n_items, train_cfg, t0, path, progress)
    result.checkpoint.metadata["warm_start"] = init is not None
    return result
