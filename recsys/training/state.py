"""The epoch loop's resumable state: saved after every epoch, so that a killed training resumes."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from recsys.config import TrainConfig
from recsys.data.lake import replace_durably
from recsys.model.sasrec import SASRec

log = logging.getLogger(__name__)


def fingerprint(data: torch.Tensor, model: SASRec, cfg: TrainConfig, world_size: int) -> str:
    """What a saved training state must match to be resumed: the data, the starting weights
    (architecture, seed and warm-start checkpoint), the config and the number of processes."""
    digest = hashlib.blake2b(data.numpy().tobytes(), digest_size=16)
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().numpy().tobytes())
    digest.update(repr((dataclasses.asdict(cfg), world_size)).encode())
    return digest.hexdigest()


@dataclass
class TrainingState:
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
        replace_durably(tmp, path)  # a power cut leaves the old state or the new

    @classmethod
    def resume(cls, path: Path | None, fingerprint: str, model: SASRec,
               opt: torch.optim.Optimizer, gen: torch.Generator) -> TrainingState:  # fmt: skip
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


def to_cpu(obj: Any) -> Any:
    """A deep copy of a (nested) state dict with every tensor on the CPU."""
    if torch.is_tensor(obj):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_cpu(v) for v in obj)
    return copy.deepcopy(obj)
