"""SASRec-style next-item transformer in plain torch, plus its checkpoint format.

Sequences are left-padded with 0 (the most recent item is last). The model is a stack of
pre-LayerNorm causal self-attention blocks over item + learned position embeddings; the output
layer is tied to the item embedding, so ``logits = hidden @ item_emb.T`` and growing the
catalogue only means adding embedding rows.

No device moves, no I/O and no argparse in here, except ``Checkpoint.save`` / ``Checkpoint.load``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from recsys.config import ModelConfig

INIT_STD = 0.02  # std of every embedding and linear weight at init (GPT-2 / nanoGPT)


class Dropout(nn.Module):
    """Inverted dropout, the same maths as ``nn.Dropout``, drawn as ``rand >= p``: on CPU that is
    about twice as fast as ``bernoulli_``, a visible share of a small model's training step."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand_like(x) >= self.p  # same shape as x
        return x * keep * (1.0 / (1.0 - self.p))


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with a caller-provided boolean mask (True = may attend)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.d_model % cfg.n_heads:
            raise ValueError(f"d_model={cfg.d_model} is not divisible by n_heads={cfg.n_heads}")
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.resid_drop = Dropout(cfg.dropout)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, last_only: bool = False
    ) -> torch.Tensor:
        """Attention output ``(B, T, D)``; ``mask`` ``(B, 1, T, T)`` or None for plain causal.

        With ``last_only`` only the last position queries: output ``(B, 1, D)``, and ``mask``
        is its row ``(B, 1, 1, T)`` or None (every key allowed).
        """
        b, t, d = x.shape  # (B, T, D)
        q, k, v = self.qkv(x).split(d, dim=2)  # 3 x (B, T, D)
        q = q[:, -1:] if last_only else q  # (B, T_q, D)
        heads = (b, -1, self.n_heads, d // self.n_heads)
        q, k, v = (z.reshape(heads).transpose(1, 2) for z in (q, k, v))  # (B, H, T_*, D / H)
        # No dropout on the attention probabilities: a (B, H, T, T) random draw per layer costs
        # more than it regularises at this size; embeddings and residuals are dropped instead.
        causal = mask is None and not last_only
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        y = y.transpose(1, 2).reshape(b, q.shape[2], d)  # (B, T_q, D)
        return self.resid_drop(self.proj(y))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: ``x + attn(ln(x))`` then ``x + mlp(ln(x))``.

    The feed-forward layer is ``d_model -> d_model`` as in SASRec, not GPT's 4x: it halves the
    block's cost, which is what bounds training speed on a CPU at this model size.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.d_model),
            nn.GELU(),
            nn.Linear(cfg.d_model, cfg.d_model),
            Dropout(cfg.dropout),
        )

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, last_only: bool = False
    ) -> torch.Tensor:
        """``(B, T, D)``, or ``(B, 1, D)`` for the last position only (see the attention)."""
        y = self.attn(self.ln1(x), mask, last_only)  # (B, T, D) or (B, 1, D)
        x = (x[:, -1:] if last_only else x) + y
        return x + self.mlp(self.ln2(x))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        _init_embedding(module)


def _init_embedding(emb: nn.Embedding) -> None:
    nn.init.normal_(emb.weight, mean=0.0, std=INIT_STD)
    if emb.padding_idx is not None:
        with torch.no_grad():
            emb.weight[emb.padding_idx].zero_()


class SASRec(nn.Module):
    """Causal transformer over item histories; ``forward`` returns next-item logits."""

    def __init__(self, n_items: int, cfg: ModelConfig) -> None:
        super().__init__()
        if n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {n_items}")
        self.n_items = n_items
        self.cfg = cfg
        self.item_emb = nn.Embedding(n_items + 1, cfg.d_model, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.d_model)
        self.drop = Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.apply(_init_weights)

    def hidden(self, seqs: torch.Tensor) -> torch.Tensor:
        """Final hidden states ``(B, T, D)`` of left-padded item indices ``seqs`` ``(B, T)``."""
        x, mask = self._embed(seqs)
        for block in self.blocks:
            x = block(x, mask)  # (B, T, D)
        return self.ln_f(x)

    def last_hidden(self, seqs: torch.Tensor) -> torch.Tensor:
        """``hidden(seqs)[:, -1]`` ``(B, D)``, computing only what the last position needs: the
        last block runs for that position alone. What scoring and serving use."""
        x, mask = self._embed(seqs)
        for block in self.blocks[:-1]:
            x = block(x, mask)  # (B, T, D)
        last_row = None if mask is None else mask[:, :, -1:]  # (B, 1, 1, T)
        x = self.blocks[-1](x, last_row, last_only=True)  # (B, 1, D)
        return self.ln_f(x[:, 0])

    def _embed(self, seqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Input vectors ``(B, T, D)`` and the attention mask ``(B, 1, T, T)``; in eval mode the
        mask is None when no position is padding (plain causal attention, a faster kernel)."""
        b, t = seqs.shape
        if t > self.cfg.max_len:
            raise ValueError(f"sequence length {t} exceeds max_len={self.cfg.max_len}")
        keep = seqs != 0  # (B, T), False on padding
        # Positions are right-aligned: the most recent item always gets position max_len - 1.
        pos = torch.arange(self.cfg.max_len - t, self.cfg.max_len, device=seqs.device)  # (T,)
        x = self.item_emb(seqs) + self.pos_emb(pos)  # (B, T, D)
        # Inference only: the check reads the tensor on the host, a sync per training step on GPU.
        if not self.training and bool(keep.all()):
            return self.drop(x), None
        x = self.drop(x) * keep.unsqueeze(-1)  # padded positions start at exactly 0
        # Query i may attend key j if j <= i and j is an item. The diagonal is always allowed so a
        # padded query (or a fully padded row) still has one key: softmax over nothing is NaN.
        causal = torch.ones(t, t, dtype=torch.bool, device=seqs.device).tril()  # (T, T)
        eye = torch.eye(t, dtype=torch.bool, device=seqs.device)  # (T, T)
        return x, (causal & keep[:, None, None, :]) | eye  # (B, 1, T, T)

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        """Next-item logits ``(B, T, n_items + 1)`` for left-padded ``seqs`` ``(B, T)``."""
        return self.hidden(seqs) @ self.item_emb.weight.T  # tied output layer

    def grow_items(self, n_items: int) -> None:
        """Enlarge the catalogue to ``n_items``: old rows are kept bit-identical, new rows are
        initialised like a fresh model's. Build the optimizer *after* calling this."""
        if n_items < self.n_items:
            raise ValueError(f"cannot shrink the catalogue from {self.n_items} to {n_items} items")
        if n_items == self.n_items:
            return
        old = self.item_emb.weight
        new = nn.Embedding(n_items + 1, self.cfg.d_model, padding_idx=0)
        new = new.to(device=old.device, dtype=old.dtype)
        _init_embedding(new)
        with torch.no_grad():
            new.weight[: old.shape[0]] = old
        self.item_emb = new
        self.n_items = n_items


def pad_left(contexts: Sequence[Sequence[int]], max_len: int, n_known: int) -> np.ndarray:
    """Left-padded ``(N, max_len)`` int64 array of the last ``max_len`` known items per context.

    Items outside ``1..n_known`` (e.g. newer than the model) are dropped before truncation.
    """
    out = np.zeros((len(contexts), max_len), dtype=np.int64)
    for row, ctx in enumerate(contexts):
        items = np.asarray(ctx, dtype=np.int64)
        items = items[(items > 0) & (items <= n_known)][-max_len:]
        if items.size:
            out[row, max_len - items.size :] = items
    return out


def score_contexts(
    model: SASRec, contexts: Sequence[Sequence[int]], n_items: int, batch_size: int = 256
) -> np.ndarray:
    """Next-item scores ``(N, n_items + 1)`` for each context, from the last position's logits.

    Context items the model does not know (index > ``model.n_items``) are dropped; output columns
    of unknown items and column 0 (padding) are ``-inf``. An empty context is scored from padding
    only and still gives finite scores for known items. The model's train/eval mode is restored.
    """
    n_known = min(model.n_items, n_items)
    seqs = pad_left(contexts, model.cfg.max_len, model.n_items)  # (N, T)
    lengths = (seqs != 0).sum(axis=1)  # (N,)
    # Contexts of similar length are scored together, each batch cut to its longest context:
    # positions are right-aligned and padding is never attended to, so the scores are the same
    # as on full-width rows, without computing on the padding.
    order = np.argsort(lengths, kind="stable")  # (N,)
    out = np.full((len(contexts), n_items + 1), -np.inf, dtype=np.float32)
    weight = model.item_emb.weight
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(seqs), batch_size):
                rows = order[start : start + batch_size]  # (B,)
                width = max(1, int(lengths[rows].max()))
                batch = torch.from_numpy(seqs[rows, -width:]).to(weight.device)  # (B, W)
                last = model.last_hidden(batch)  # (B, D)
                logits = last @ weight[1 : n_known + 1].T  # (B, n_known)
                out[rows, 1 : n_known + 1] = logits.float().cpu().numpy()
    finally:
        model.train(was_training)
    return out


@dataclass
class Checkpoint:
    """Everything needed to rebuild, evaluate or warm-start a model.

    Saved with plain Python containers and tensors only, so ``torch.load(weights_only=True)``
    works; ``metadata`` (item ids, metrics...) must follow the same rule.
    """

    model_state: dict[str, torch.Tensor]
    model_config: ModelConfig
    n_items: int
    train_config: dict[str, Any]
    optimizer_state: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        """Write the checkpoint to ``path`` with ``torch.save``."""
        payload = {
            "model_state": self.model_state,
            "model_config": dataclasses.asdict(self.model_config),
            "n_items": self.n_items,
            "train_config": dict(self.train_config),
            "optimizer_state": self.optimizer_state,
            "metadata": self.metadata,
        }
        torch.save(payload, Path(path))

    @classmethod
    def load(cls, path: str | Path) -> Checkpoint:
        """Read a checkpoint written by ``save`` (CPU tensors, ``weights_only=True``)."""
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
        return cls(
            model_state=payload["model_state"],
            model_config=ModelConfig(**payload["model_config"]),
            n_items=int(payload["n_items"]),
            train_config=payload["train_config"],
            optimizer_state=payload["optimizer_state"],
            metadata=payload["metadata"],
        )


def build_model(ckpt: Checkpoint) -> SASRec:
    """A model with the checkpoint's architecture and weights, in eval mode."""
    model = SASRec(ckpt.n_items, ckpt.model_config)
    model.load_state_dict(ckpt.model_state)
    return model.eval()
