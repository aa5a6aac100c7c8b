"""A trained model plus its item index: item ids in, ranked item ids out.

Serving, the MLflow pyfunc flavour and the promotion smoke check all recommend through this class,
so what is evaluated is what is served.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.model import Checkpoint, build_model, score_contexts


@dataclass
class Recommender:
    checkpoint: Checkpoint
    item_ids: list[str]  # item_ids[i - 1] is the id of item index i

    def __post_init__(self) -> None:
        self.model = build_model(self.checkpoint)
        self.model.eval()
        self.index = {item: i + 1 for i, item in enumerate(self.item_ids)}

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        ckpt = Checkpoint.load(path)
        return cls(ckpt, list(ckpt.metadata["item_ids"]))

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def recommend(
        self, history: Sequence[str], k: int = 10, exclude_seen: bool = True
    ) -> list[tuple[str, float]]:
        """Top-``k`` (item id, score) for a user whose items so far are ``history`` (oldest first).

        Items the model has never seen are ignored in the history; they cannot be recommended yet.
        """
        context = [self.index[item] for item in history if item in self.index]
        scores = score_contexts(self.model, [context], self.n_items)[0]  # (n_items + 1,)
        scores[0] = -np.inf
        if exclude_seen and context:
            scores[context] = -np.inf
        k = min(k, int(np.isfinite(scores).sum()))
        top = np.argpartition(-scores, k - 1)[:k] if k > 0 else np.array([], dtype=int)
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(self.item_ids[i - 1], float(scores[i])) for i in top]
