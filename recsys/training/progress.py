"""What the epoch loop reports after each epoch, for whoever watches a training: the CLI's
progress bar, a log line, an MLflow run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class EpochReport:
    epoch: int
    epochs: int  # the most this training may run
    loss: float
    valid_ndcg: float | None  # the latest validation check's NDCG@10 (None: none yet)
    elapsed_s: float
    max_seconds: float  # the time budget: training may end before ``epochs``
    valid: dict[str, float] | None = None  # this epoch's validation check (None: none this epoch)

    @property
    def eta_s(self) -> float:
        """Seconds left at the pace so far, never past the time budget."""
        per_epoch = self.elapsed_s / max(self.epoch, 1)
        left = min(per_epoch * (self.epochs - self.epoch), self.max_seconds - self.elapsed_s)
        return max(0.0, left)

    def line(self) -> str:
        ndcg = "-" if self.valid_ndcg is None else f"{self.valid_ndcg:.4f}"
        return (
            f"epoch {self.epoch}/{self.epochs}  loss {self.loss:.4f}  valid NDCG@10 {ndcg}  "
            f"{self.elapsed_s:.0f} s, about {self.eta_s:.0f} s left"
        )


Progress = Callable[[EpochReport], None]
