"""The training losses: a chunked full softmax (CPU), a sampled softmax, and the GPU's dense form.

Each is the cross-entropy of the next item; the items a position has already seen can be left out
of its softmax (``TrainConfig.mask_seen``), its own target excepted.
"""

from __future__ import annotations

from typing import Any

import torch

from recsys.config import TrainConfig
from recsys.model.sasrec import SASRec

CE_CHUNK = 512  # rows of logits computed at once: (512, n_items + 1) floats stay in cache


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


def batch_loss(
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
