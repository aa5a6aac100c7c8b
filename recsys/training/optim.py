"""What the optimizer steps: parameter groups, a warm start's weights and moments, the learning-rate
schedule and the weight average."""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from collections.abc import Iterator
from typing import Any

import torch

from recsys.config import ModelConfig, TrainConfig
from recsys.model.sasrec import Checkpoint, SASRec, build_model

log = logging.getLogger(__name__)


def make_optimizer(model: SASRec, cfg: TrainConfig) -> torch.optim.AdamW:
    # Decay matrices and embeddings only, not biases and LayerNorm gains (as nanoGPT does).
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    # On a GPU the fused kernel updates every parameter in one launch.
    fused = model.item_emb.weight.device.type == "cuda" or None
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=fused)


def warm_start_optimizer(opt: torch.optim.AdamW, state: dict[str, Any], cfg: TrainConfig) -> None:
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


def lr_at(cfg: TrainConfig, progress: float) -> float:
    """The learning rate after ``progress`` epochs (fractional) under ``cfg.schedule``."""
    if progress < cfg.warmup_epochs:
        return cfg.lr * progress / cfg.warmup_epochs
    if cfg.schedule == "constant":
        return cfg.lr
    span = max(cfg.epochs - cfg.warmup_epochs, 1e-9)
    done = min(max((progress - cfg.warmup_epochs) / span, 0.0), 1.0)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * done))


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
