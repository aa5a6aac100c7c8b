"""Training: one ``train()`` for both full retraining and incremental fine-tuning.

Full mode builds a fresh ``SASRec`` from ``ModelConfig``. Incremental mode (``init`` given) takes
the architecture and weights from the checkpoint, like nanoGPT's ``init_from``, grows the item
embedding if the catalogue grew, and continues with the ``TrainConfig.finetune()`` preset.

Selection uses the validation split only; the test split is never read here.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from recsys.config import ModelConfig, TrainConfig
from recsys.evaluate import Split, evaluate_scores
from recsys.model import Checkpoint, SASRec, build_model, score_contexts

log = logging.getLogger(__name__)

VALID_K = 10
SELECT_METRIC = f"ndcg_at_{VALID_K}"  # checkpoint selection and early stopping
GRAD_CLIP = 1.0
CE_CHUNK = 512  # rows of logits computed at once: (512, n_items + 1) floats stay in cache
LENGTH_BUCKET = 8  # windows whose lengths fall in the same bucket of 8 are batched together


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


def build_windows(sequences: Sequence[Sequence[int]], max_len: int) -> torch.Tensor:
    """Cut each sequence into left-padded windows ``(N, max_len + 1)``.

    Windows are taken from the end backwards and overlap by one item, so every item but a user's
    first is a training target exactly once per epoch; sequences shorter than 2 are skipped.
    """
    width = max_len + 1
    windows: list[np.ndarray] = []
    for seq in sequences:
        arr = np.asarray(seq, dtype=np.int64)
        end = len(arr)
        while end >= 2:
            start = max(0, end - width)
            windows.append(arr[start:end])
            end = start + 1  # the next window ends with this one's first item, an input only here
    out = np.zeros((len(windows), width), dtype=np.int64)
    for row, win in enumerate(windows):
        out[row, width - len(win) :] = win
    return torch.from_numpy(out)


class SoftmaxCrossEntropy(torch.autograd.Function):
    """Mean full-softmax cross-entropy of ``hidden @ weight.T``, computed in row chunks.

    Equivalent to ``F.cross_entropy(hidden @ weight.T, targets)``, but the ``(M, V)`` logits never
    exist at once: each chunk's logits stay in cache and their gradients are taken right away,
    which makes the output layer about twice as fast on CPU. Gradients are kept for backward.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        grad_hidden = torch.empty_like(hidden)  # (M, D)
        grad_weight = torch.zeros_like(weight)  # (V, D)
        total = hidden.new_zeros(())
        for start in range(0, len(hidden), CE_CHUNK):
            h = hidden[start : start + CE_CHUNK]  # (C, D)
            y = targets[start : start + CE_CHUNK]  # (C,)
            logp = torch.log_softmax(h @ weight.T, dim=1)  # (C, V)
            total -= logp.gather(1, y[:, None]).sum()
            probs = logp.exp_()  # (C, V), in place: d loss / d logits = probs - onehot
            probs[torch.arange(len(y)), y] -= 1.0
            torch.mm(probs, weight, out=grad_hidden[start : start + CE_CHUNK])
            grad_weight.addmm_(probs.T, h)
        ctx.save_for_backward(grad_hidden, grad_weight)
        return total / len(hidden)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, None]:
        grad_hidden, grad_weight = ctx.saved_tensors
        scale = grad_out / len(grad_hidden)
        return grad_hidden * scale, grad_weight * scale, None


def _make_optimizer(model: SASRec, cfg: TrainConfig) -> torch.optim.AdamW:
    # Decay matrices and embeddings only, not biases and LayerNorm gains (as nanoGPT does).
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _warm_start_optimizer(opt: torch.optim.AdamW, state: dict[str, Any], cfg: TrainConfig) -> None:
    """Load a checkpoint's AdamW moments, zero-padding those of grown parameters, then apply
    this run's learning rate and weight decay (the loaded param groups carry the old ones)."""
    state = copy.deepcopy(state)
    params = [p for group in opt.param_groups for p in group["params"]]
    try:
        for idx, p in enumerate(params):
            for key, value in state["state"].get(idx, {}).items():
                if torch.is_tensor(value) and value.dim() and value.shape != p.shape:
                    padded = torch.zeros_like(p)  # (n_items + 1, D) for the item embedding
                    padded[: value.shape[0]] = value
                    state["state"][idx][key] = padded
        opt.load_state_dict(state)
    except (ValueError, KeyError, RuntimeError) as err:
        log.warning("could not load the checkpoint's optimizer state (%s); starting fresh", err)
        return
    decays = (cfg.weight_decay, 0.0)
    for group, decay in zip(opt.param_groups, decays, strict=True):
        group["lr"] = cfg.lr
        group["weight_decay"] = decay


def init_model(n_items: int, model_cfg: ModelConfig, init: Checkpoint | None = None) -> SASRec:
    """The model a run starts from, before any training step.

    Without ``init``: a fresh ``SASRec(n_items, model_cfg)``. With ``init``: the checkpoint's
    architecture and weights (``model_cfg`` is ignored, as in nanoGPT's ``init_from``), with the
    item embedding grown to ``n_items``. Uses torch's global RNG: seed it first.
    """
    if init is None:
        return SASRec(n_items, model_cfg)
    if n_items < init.n_items:
        raise ValueError(f"catalogue shrank from {init.n_items} to {n_items} items")
    model = build_model(init)
    if n_items > init.n_items:
        log.info("growing the item embedding from %d to %d items", init.n_items, n_items)
        model.grow_items(n_items)
    return model


def _batches(lengths: torch.Tensor, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Seeded random batches of window indices, each from windows of similar length.

    Windows are shuffled, stably grouped by length bucket and cut into batches, and the batches
    are shuffled again: batches stay random but carry little padding to compute on.
    """
    order = torch.randperm(len(lengths), generator=gen)  # (N,)
    buckets = torch.div(lengths[order], LENGTH_BUCKET, rounding_mode="floor")
    order = order[torch.argsort(buckets, stable=True)]
    batches = list(order.split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


def _run_epoch(
    model: SASRec,
    opt: torch.optim.Optimizer,
    data: torch.Tensor,
    batch_size: int,
    gen: torch.Generator,
    deadline: float,
) -> tuple[float, int]:
    """One pass over ``data`` ``(N, T + 1)`` in a seeded random order: (mean loss, n targets)."""
    model.train()
    lengths = (data != 0).sum(dim=1)  # (N,)
    total_loss, n_tokens = 0.0, 0
    for idx in _batches(lengths, batch_size, gen):
        width = int(lengths[idx].max())
        batch = data[idx, -width:]  # (B, W): columns that are padding in every row dropped
        x, y = batch[:, :-1], batch[:, 1:]  # (B, W - 1) inputs and next-item targets
        sel = (x != 0) & (y != 0)  # predict only from a real item
        hidden = model.hidden(x)[sel]  # (M, D)
        loss = SoftmaxCrossEntropy.apply(hidden, model.item_emb.weight, y[sel])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        n = int(sel.sum())
        total_loss += float(loss.detach()) * n
        n_tokens += n
        if time.perf_counter() >= deadline:
            break
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
) -> TrainResult:
    """The epoch loop: train, validate every ``eval_every`` epochs, keep the best, stop early."""
    gen = torch.Generator().manual_seed(cfg.seed)  # batch order
    deadline = t0 + cfg.max_seconds
    history: list[dict[str, Any]] = []
    losses: list[float] = []
    best_valid: dict[str, float] = {}
    best_state: dict[str, Any] = {}
    best_opt: dict[str, Any] = {}
    best_epoch, bad_checks, train_seconds, total_tokens = 0, 0, 0.0, 0
    for epoch in range(1, cfg.epochs + 1):
        t_epoch = time.perf_counter()
        loss, n_tokens = _run_epoch(model, opt, data, cfg.batch_size, gen, deadline)
        train_seconds += time.perf_counter() - t_epoch
        total_tokens += n_tokens
        losses.append(loss)
        out_of_time = time.perf_counter() >= deadline
        if not (epoch % cfg.eval_every == 0 or epoch == cfg.epochs or out_of_time):
            continue
        metrics = _validate(model, split, n_items)  # None without validation users
        history.append({"epoch": epoch, "loss": loss, **(metrics or {})})
        improved = metrics is None or not best_valid or (
            metrics[SELECT_METRIC] > best_valid[SELECT_METRIC]
        )  # fmt: skip
        log.info(
            "epoch %d loss %.4f valid %s %.4f%s (%.1fs)",
            epoch, loss, SELECT_METRIC, (metrics or {}).get(SELECT_METRIC, float("nan")),
            " *" if improved else "", time.perf_counter() - t0,
        )  # fmt: skip
        if improved:
            best_valid, best_epoch, bad_checks = dict(metrics or {}), epoch, 0
            best_state = copy.deepcopy(model.state_dict())
            best_opt = copy.deepcopy(opt.state_dict())
        else:
            bad_checks += 1
        if bad_checks >= cfg.patience:
            log.info("early stop at epoch %d, best epoch %d", epoch, best_epoch)
            break
        if out_of_time:
            log.warning("max_seconds=%.0f reached at epoch %d", cfg.max_seconds, epoch)
            break
    checkpoint = Checkpoint(
        model_state=best_state,
        model_config=model.cfg,
        n_items=n_items,
        train_config=dataclasses.asdict(cfg),
        optimizer_state=best_opt,
        metadata={"best_epoch": best_epoch, "valid": best_valid},
    )
    return TrainResult(
        checkpoint=checkpoint,
        history=history,
        best_epoch=best_epoch,
        best_valid=best_valid,
        seconds=time.perf_counter() - t0,
        tokens_per_s=total_tokens / max(train_seconds, 1e-9),
        losses=losses,
    )


def train(
    split: Split,
    n_items: int,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    init: Checkpoint | None = None,
) -> TrainResult:
    """Train on ``split.train``, select on ``split.valid_*``, return the best checkpoint.

    With ``init`` the run is a warm start: the architecture comes from ``init`` (``model_cfg`` is
    ignored), the weights and optimizer moments are loaded and the catalogue is grown to
    ``n_items``. Validation NDCG@10 is computed every ``eval_every`` epochs and at the last
    epoch; training stops after ``patience`` checks without improvement, ``epochs`` epochs or
    ``max_seconds``. Without validation users the last state is returned. Seeded by
    ``train_cfg.seed``; the caller's global torch RNG state is left as it was.
    """
    t0 = time.perf_counter()
    if train_cfg.epochs < 1 or train_cfg.eval_every < 1 or train_cfg.patience < 1:
        raise ValueError("epochs, eval_every and patience must be >= 1")
    if train_cfg.mode == "incremental" and init is None:
        raise ValueError("mode='incremental' needs an init checkpoint to warm-start from")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train_cfg.seed)  # fresh weights or new item rows, and dropout
        model = init_model(n_items, model_cfg, init)
        opt = _make_optimizer(model, train_cfg)  # after grow_items: it holds the new embedding
        if init is not None and init.optimizer_state is not None:
            _warm_start_optimizer(opt, init.optimizer_state, train_cfg)
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
        result = _fit(model, opt, data, split, n_items, train_cfg, t0)
    result.checkpoint.metadata["warm_start"] = init is not None
    return result
