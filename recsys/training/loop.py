"""Training: one ``train()`` for both full retraining and incremental fine-tuning.

Full mode builds a fresh ``SASRec`` from ``ModelConfig``. Incremental mode (``init`` given) takes
the architecture and weights from the checkpoint, like nanoGPT's ``init_from``, grows the item
embedding if the catalogue grew, and continues with the ``TrainConfig.finetune()`` preset.

Selection uses the validation split only; the test split is never read here.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recsys.config import ModelConfig, TrainConfig
from recsys.evaluation.metrics import Split, evaluate_scores, leave_last_out
from recsys.model.sasrec import Checkpoint, SASRec, build_model, score_contexts

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
    tokens: int = 0  # training targets processed in all (every process, every epoch)
    resumed_after_epoch: int = 0  # > 0: continued a killed run's saved state after that epoch


def mix_replay(
    new: Sequence[Sequence[int]], old: Sequence[Sequence[int]], ratio: float, seed: int
) -> list[list[int]]:
    """``new`` followed by a seeded sample of ``round(ratio * len(new))`` sequences of ``old``.

    The replay sample that keeps an incremental fine-tune from forgetting: drawn without
    replacement and capped at ``len(old)``; the same inputs and seed give the same list.
    """
    if ratio < 0:
        raise ValueError(f"replay ratio must be >= 0, got {ratio}")
    n_old = min(len(old), round(ratio * len(new)))
    picks = np.random.default_rng(seed).choice(len(old), size=n_old, replace=False)
    return [list(s) for s in new] + [list(old[int(i)]) for i in np.sort(picks)]


def in_old_slice(user_id: str, share: float) -> bool:
    """Whether a user belongs to the fixed old-data slice: a stable hash of the id, so the
    same users are in it on every run, whatever else the snapshot holds."""
    bucket = int(hashlib.blake2b(user_id.encode(), digest_size=4).hexdigest(), 16) % 10_000
    return bucket < share * 10_000


@dataclass(frozen=True)
class IncrementalSplits:
    """What an incremental fine-tune trains on and is judged on."""

    train: Split  # new users' train parts + replayed old train parts; new users' validation
    new: Split  # users active since the parent's data: the new data
    old: Split  # a fixed slice of the other users: what the parent knew and must not forget


def incremental_splits(
    users: Sequence[str],
    sequences: Sequence[Sequence[int]],
    active: set[str],
    replay_ratio: float,
    seed: int,
    min_events: int = 3,
    old_share: float = 0.2,
) -> IncrementalSplits:
    """Split a snapshot for a fine-tune: ``active`` users are new data; the others are old.

    Training replays ``replay_ratio`` old train parts per new one (never a held-out item);
    ``old`` holds the leave-last-out test of a fixed, hash-chosen ``old_share`` of old users.
    """
    new = [seq for user, seq in zip(users, sequences, strict=True) if user in active]
    old = [(user, seq) for user, seq in zip(users, sequences, strict=True) if user not in active]
    new_split = leave_last_out(new, min_events)
    old_split = leave_last_out([seq for _, seq in old], min_events)
    old_slice = leave_last_out([seq for u, seq in old if in_old_slice(u, old_share)], min_events)
    mixed = mix_replay(new_split.train, old_split.train, replay_ratio, seed)
    return IncrementalSplits(dataclasses.replace(new_split, train=mixed), new_split, old_slice)


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
    With ``seen`` ``(M, T)`` each row's seen items are left out of its softmax, its own target
    excepted, and so is column 0, the padding (without ``seen`` it stays in, as in
    ``F.cross_entropy``).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        seen: torch.Tensor | None = None,
    ) -> torch.Tensor:
        grad_hidden = torch.empty_like(hidden)  # (M, D)
        grad_weight = torch.zeros_like(weight)  # (V, D)
        total = hidden.new_zeros(())
        for start in range(0, len(hidden), CE_CHUNK):
            h = hidden[start : start + CE_CHUNK]  # (C, D)
            y = targets[start : start + CE_CHUNK]  # (C,)
            logits = h @ weight.T  # (C, V)
            if seen is not None:
                _mask_seen(logits, seen[start : start + CE_CHUNK], y)
            # One exp per logit: the softmax, then the loss from the target's probability.
            probs = torch.softmax(logits, dim=1)  # (C, V): d loss / d logits = probs - onehot
            nll = probs.gather(1, y[:, None]).log_().neg_()  # (C, 1)
            lost = torch.isinf(nll)  # the target's probability underflowed to 0
            if bool(lost.any()):
                rows = lost[:, 0]
                exact = torch.logsumexp(logits[rows], dim=1) - logits[rows, y[rows]]
                nll[rows] = exact[:, None]
            total += nll.sum()
            probs[torch.arange(len(y)), y] -= 1.0
            torch.mm(probs, weight, out=grad_hidden[start : start + CE_CHUNK])
            grad_weight.addmm_(probs.T, h)
        ctx.save_for_backward(grad_hidden, grad_weight)
        return total / len(hidden)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        grad_hidden, grad_weight = ctx.saved_tensors
        scale = grad_out / len(grad_hidden)
        return grad_hidden * scale, grad_weight * scale, None, None


def _make_optimizer(model: SASRec, cfg: TrainConfig) -> torch.optim.AdamW:
    # Decay matrices and embeddings only, not biases and LayerNorm gains (as nanoGPT does).
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    # On a GPU the fused kernel updates every parameter in one launch.
    fused = model.item_emb.weight.device.type == "cuda" or None
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=fused)


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


def init_model(
    n_items: int, model_cfg: ModelConfig, init: Checkpoint | None = None, shrink: float = 1.0
) -> SASRec:
    """The model a run starts from, before any training step.

    Without ``init``: a fresh ``SASRec(n_items, model_cfg)``. With ``init``: the checkpoint's
    architecture and weights (``model_cfg`` is ignored, as in nanoGPT's ``init_from``), its
    weight matrices and embeddings multiplied by ``shrink`` (``TrainConfig.warm_shrink``), with
    the item embedding then grown to ``n_items``. Uses torch's global RNG: seed it first.
    """
    if not 0.0 < shrink <= 1.0:
        raise ValueError(f"warm_shrink must be in (0, 1], got {shrink}")
    if init is None:
        return SASRec(n_items, model_cfg)
    if n_items < init.n_items:
        raise ValueError(f"catalogue shrank from {init.n_items} to {n_items} items")
    model = build_model(init)
    if shrink != 1.0:
        with torch.no_grad():
            for param in model.parameters():
                if param.dim() >= 2:  # matrices and embeddings; LayerNorm gains and biases stay
                    param.mul_(shrink)
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


def sampled_softmax_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    n_negatives: int,
    seen: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of each target against ``n_negatives`` uniformly drawn items.

    For catalogues too large for a full softmax: the negatives are shared by the whole batch
    (one ``(M, n_negatives)`` matrix product), a negative equal to a row's target or among its
    ``seen`` items ``(M, T)`` is masked out, and with uniform sampling the logQ correction is a
    constant that cancels. Uses torch's global RNG. ``hidden`` ``(M, D)``, ``weight`` ``(V, D)``
    (row 0: padding), ``targets`` ``(M,)``.
    """
    negatives = torch.randint(1, weight.shape[0], (n_negatives,), device=hidden.device)  # (S,)
    pos = (hidden * weight[targets]).sum(dim=1, keepdim=True)  # (M, 1)
    neg = hidden @ weight[negatives].T  # (M, S)
    masked = negatives[None, :] == targets[:, None]  # (M, S)
    if seen is not None:
        masked |= _drawn_and_seen(negatives, seen, weight.shape[0])
    neg = neg.masked_fill(masked, float("-inf"))
    logits = torch.cat([pos, neg], dim=1)  # (M, 1 + S), the target in column 0
    return torch.nn.functional.cross_entropy(logits, targets.new_zeros(len(targets)))


def seen_items(inputs: torch.Tensor, sel: torch.Tensor | None = None) -> torch.Tensor:
    """Items each position has already seen: row ``t`` holds ``inputs[:, :t + 1]`` and 0
    (padding) after it. ``(B, T, T)`` for every position of ``inputs`` ``(B, T)``, or ``(M, T)``
    for the ``M`` positions that ``sel`` ``(B, T)`` selects, in the order of ``x[sel]``.

    A position's own target may be among them: the losses keep each row's target in its
    softmax (see ``_mask_seen``), so a repeat stays predictable.
    """
    t = inputs.shape[1]
    if sel is None:
        before = torch.ones(t, t, dtype=torch.bool, device=inputs.device).tril()  # (T, T)
        return inputs[:, None, :] * before  # (B, T, T)
    rows, pos = sel.nonzero(as_tuple=True)  # (M,) each
    later = torch.arange(t, device=inputs.device)[None, :] > pos[:, None]  # (M, T)
    return inputs[rows].masked_fill(later, 0)  # (M, T)


def _mask_seen(logits: torch.Tensor, seen: torch.Tensor, targets: torch.Tensor) -> None:
    """Set ``logits`` ``(M, V)`` to -inf, in place, at each row's ``seen`` items ``(M, T)`` and
    at column 0 (padding), except at the row's own target ``(M,)``, whose logit is kept."""
    own = logits.gather(1, targets[:, None])  # (M, 1)
    logits.scatter_(1, seen, float("-inf"))
    logits[:, 0] = float("-inf")  # padding, never a candidate
    logits.scatter_(1, targets[:, None], own)


def _drawn_and_seen(negatives: torch.Tensor, seen: torch.Tensor, n_rows: int) -> torch.Tensor:
    """``(M, S)``: whether each drawn negative ``(S,)`` is among each row's ``seen`` items
    ``(M, T)`` (0: none), without an ``(M, T, S)`` comparison: every item maps to one slot of
    its draws, the rows mark the slots of their seen items, and each draw reads its slot."""
    slot = torch.full((n_rows,), -1, dtype=torch.long, device=negatives.device)  # (V,)
    draws = torch.arange(len(negatives), device=negatives.device)  # (S,)
    slot[negatives] = draws  # an item drawn twice keeps one of its slots
    hit = slot[seen]  # (M, T): the slot of each seen item, -1 if it was not drawn
    marks = torch.zeros(len(seen), len(negatives) + 1, dtype=torch.bool, device=seen.device)
    marks.scatter_(1, hit.masked_fill(hit < 0, len(negatives)), True)  # column S: not drawn
    return marks[:, slot[negatives]]  # (M, S), the same answer for every copy of an item


def _loss(
    model: SASRec,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    cfg: TrainConfig,
    seen: torch.Tensor | None = None,
) -> torch.Tensor:
    if cfg.loss == "sampled":
        weight = model.item_emb.weight
        return sampled_softmax_loss(hidden, weight, targets, cfg.n_negatives, seen)
    return SoftmaxCrossEntropy.apply(hidden, model.item_emb.weight, targets, seen)


def dense_loss_sum(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    keep: torch.Tensor,
    seen: torch.Tensor | None = None,
) -> torch.Tensor:
    """Summed full-softmax cross-entropy of every kept position, as a 0-dim tensor.

    The GPU form of the loss: one ``(B * T, V)`` logits product over all positions, padding
    included, and no boolean indexing, so the host never waits for the device to learn how many
    targets a batch holds. ``hidden`` ``(B, T, D)``, ``weight`` ``(V, D)``, ``targets`` and
    ``keep`` ``(B, T)``.
    """
    logits = hidden.flatten(0, 1) @ weight.T  # (B * T, V)
    if seen is not None:  # (B, T, T) items left out of each position's softmax
        out = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, seen.flatten(0, 1), True)
        out[:, 0] = True  # padding, never a candidate
        out.scatter_(1, targets.flatten()[:, None], False)  # but never the position's target
        logits = logits.masked_fill(out, float("-inf"))
    ignored = targets.masked_fill(~keep, -100).flatten()  # (B * T,)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 -> fp32
    return torch.nn.functional.cross_entropy(logits, ignored, reduction="sum")


def _dense_steps(device: torch.device, cfg: TrainConfig) -> bool:
    """Whether ``_run_epoch`` takes the GPU form of a step (see there)."""
    return device.type == "cuda" and cfg.loss == "full"


def _autocast(device: torch.device, cfg: TrainConfig) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast when ``cfg.precision`` is "bf16", else nothing."""
    if cfg.precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def lr_at(cfg: TrainConfig, progress: float) -> float:
    """The learning rate after ``progress`` epochs (fractional) under ``cfg.schedule``."""
    if progress < cfg.warmup_epochs:
        return cfg.lr * progress / cfg.warmup_epochs
    if cfg.schedule == "constant":
        return cfg.lr
    span = max(cfg.epochs - cfg.warmup_epochs, 1e-9)
    done = min(max((progress - cfg.warmup_epochs) / span, 0.0), 1.0)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * done))


def drop_items(x: torch.Tensor, p: float) -> torch.Tensor:
    """``x`` ``(B, T)`` with each item but the last column's turned to padding with probability
    ``p`` (torch's global RNG): later positions no longer attend to it. The targets are unchanged,
    so every position still predicts its next item, from less context."""
    drop = (torch.rand(x.shape, device=x.device) < p) & (x != 0)  # (B, T)
    drop[:, -1] = False
    return x.masked_fill(drop, 0)


class WeightAverage:
    """Exponential moving average of a model's floating-point weights, updated after each step.

    The decay per step gives a half-life of ``halflife_steps``; early on it is capped at
    ``(1 + n) / (10 + n)`` after ``n`` updates, so the average soon forgets the random start.
    ``applied`` swaps the average into the model for a validation and swaps the weights back.
    """

    def __init__(self, model: SASRec, halflife_steps: float) -> None:
        self.decay = 0.5 ** (1.0 / max(halflife_steps, 1e-9))
        self.updates = 0
        self.shadow = {
            k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()
        }

    @torch.no_grad()
    def update(self, model: SASRec) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        state = model.state_dict()
        for key, avg in self.shadow.items():
            avg.lerp_(state[key], 1.0 - decay)

    @contextlib.contextmanager
    def applied(self, model: SASRec) -> Iterator[None]:
        raw = {k: v.detach().clone() for k, v in model.state_dict().items() if k in self.shadow}
        model.load_state_dict(self.shadow, strict=False)
        try:
            yield
        finally:
            model.load_state_dict(raw, strict=False)


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
    batches = _batches(lengths, cfg.batch_size, gen)
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
            loss = _loss(model, hidden, y[sel], cfg, seen)
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


def _fingerprint(data: torch.Tensor, model: SASRec, cfg: TrainConfig) -> str:
    """What a saved training state must match to be resumed: the data, the starting weights
    (architecture, seed and warm-start checkpoint), the config and the number of processes."""
    digest = hashlib.blake2b(data.numpy().tobytes(), digest_size=16)
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().numpy().tobytes())
    digest.update(repr((dataclasses.asdict(cfg), _world()[1])).encode())
    return digest.hexdigest()


@dataclass
class _State:
    """The epoch loop's state: saved after every epoch so that a killed training resumes."""

    fingerprint: str
    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    best_valid: dict[str, float] = field(default_factory=dict)
    best_state: dict[str, Any] = field(default_factory=dict)
    best_opt: dict[str, Any] = field(default_factory=dict)
    best_epoch: int = 0
    bad_checks: int = 0
    train_seconds: float = 0.0
    total_tokens: int = 0
    elapsed: float = 0.0  # wall seconds spent by earlier attempts
    done: bool = False
    ema: dict[str, Any] = field(default_factory=dict)  # WeightAverage.shadow, when averaging
    ema_updates: int = 0

    def save(self, path: Path, model: SASRec, opt: torch.optim.Optimizer,
             gen: torch.Generator) -> None:  # fmt: skip
        """Write atomically: a reader (or a resumed run) sees the old file or the new one."""
        payload = {**dataclasses.asdict(self), "model": model.state_dict(),
                   "opt": opt.state_dict(), "gen": gen.get_state(),
                   "torch_rng": torch.get_rng_state()}  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(payload, tmp)
        os.replace(tmp, path)

    @classmethod
    def resume(cls, path: Path | None, fingerprint: str, model: SASRec,
               opt: torch.optim.Optimizer, gen: torch.Generator) -> _State:  # fmt: skip
        """The saved state at ``path`` loaded into ``model``/``opt``/``gen``, or a fresh one."""
        if path is None or not path.exists():
            return cls(fingerprint)
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a torn or foreign file: train from the start
            log.warning("ignoring unreadable training state %s (%s)", path, err)
            return cls(fingerprint)
        if payload.get("fingerprint") != fingerprint:
            log.warning("training state %s is for other data or config; starting over", path)
            return cls(fingerprint)
        model.load_state_dict(payload.pop("model"))
        opt.load_state_dict(payload.pop("opt"))
        gen.set_state(payload.pop("gen"))
        torch.set_rng_state(payload.pop("torch_rng"))
        state = cls(**payload)
        log.info("resuming training from %s after epoch %d", path, state.epoch)
        return state


def _fit(
    model: SASRec,
    opt: torch.optim.AdamW,
    data: torch.Tensor,
    split: Split,
    n_items: int,
    cfg: TrainConfig,
    t0: float,
    state_path: Path | None,
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
    st = _State.resume(state_path, _fingerprint(data, model, cfg), model, opt, gen)
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


def _to_cpu(obj: Any) -> Any:
    """A deep copy of a (nested) state dict with every tensor on the CPU."""
    if torch.is_tensor(obj):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return copy.deepcopy(obj)


def _agree(flag: bool, device: torch.device) -> bool:
    """``flag`` as rank 0 sees it, on every process (itself outside a process group)."""
    if _world()[1] == 1:
        return flag
    out = torch.tensor([int(flag)], device=device)  # nccl broadcasts GPU tensors only
    torch.distributed.broadcast(out, src=0)
    return bool(out.item())


def _check(st: _State, model: SASRec, opt: torch.optim.Optimizer, split: Split, n_items: int,
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
        st.best_state = _to_cpu(model.state_dict())
        st.best_opt = _to_cpu(opt.state_dict())
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
    trains (``"cuda:0"``...); the checkpoint's tensors always come back on the CPU.
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
        path = Path(state_path) if state_path is not None else None
        result = _fit(model, opt, data, split, n_items, train_cfg, t0, path)
    result.checkpoint.metadata["warm_start"] = init is not None
    return result
