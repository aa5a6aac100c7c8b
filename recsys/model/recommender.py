"""A trained model plus its item index: item ids in, ranked item ids out.

Serving, the MLflow pyfunc flavour and the promotion smoke check all recommend through this class,
so what is evaluated is what is served. Scores are those of ``model.score_contexts``; the serving
path only skips work that does not change them (the output matrix is precomputed, and histories
are padded to the longest one in the batch rather than to ``max_len``: padding is masked out).

The pure list-making helpers for serving live here too: exploration of items the model has no
row for, blended into a ranked list at seeded positions.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from recsys.model.sasrec import Checkpoint, build_model, pad_left

# Where an item of a served list comes from.
MODEL, POPULAR, EXPLORE = "model", "popular", "explore"

Ranked = tuple[str, float | None, str]  # (item id, score or None when explored, source)


class StateCache:
    """The model's last hidden state per history, least recently used out first; thread-safe.

    A history's state depends on nothing but the model and its items, so a repeated history (a
    user asking again before their next event) skips the forward pass. The key is the history
    itself, so a new event is a new key: nothing goes stale. ``capacity`` 0 keeps nothing.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self.hits = self.misses = 0
        self._states: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._states)

    def get(self, key: bytes) -> torch.Tensor | None:
        with self._lock:
            state = self._states.get(key)
            if state is None:
                self.misses += 1
                return None
            self._states.move_to_end(key)
            self.hits += 1
            return state

    def put(self, key: bytes, state: torch.Tensor) -> None:
        if self.capacity == 0:
            return
        with self._lock:
            self._states[key] = state
            self._states.move_to_end(key)
            if len(self._states) > self.capacity:
                self._states.popitem(last=False)


@dataclass
class Recommender:
    checkpoint: Checkpoint
    item_ids: list[str]  # item_ids[i - 1] is the id of item index i
    state_cache: int = 0  # histories whose last hidden state is kept (serving); 0: none

    def __post_init__(self) -> None:
        self.states = StateCache(self.state_cache)
        self.model = build_model(self.checkpoint)
        self.model.eval()
        self.index = {item: i + 1 for i, item in enumerate(self.item_ids)}
        self.n_known = min(self.model.n_items, self.n_items)  # items with an embedding row
        with torch.no_grad():  # the tied output layer, computed once: (D, n_known)
            weight = self.model.item_emb.weight[1 : self.n_known + 1]
            self.item_matrix = weight.detach().T.contiguous()

    @classmethod
    def load(cls, path: str | Path, state_cache: int = 0) -> Recommender:
        ckpt = Checkpoint.load(path)
        return cls(ckpt, list(ckpt.metadata["item_ids"]), state_cache)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def max_len(self) -> int:
        """How many of the most recent items the model attends to."""
        return self.checkpoint.model_config.max_len

    def knows(self, history: Sequence[str]) -> bool:
        """True if at least one item of ``history`` has a row in the model (not a cold start)."""
        return any(item in self.index for item in history)

    def score(self, contexts: Sequence[Sequence[int]]) -> np.ndarray:
        """Scores ``(N, n_items + 1)`` of item-index contexts, equal to ``score_contexts``'s.

        Column 0 and items without a row are ``-inf``. One forward pass and one matrix product
        for the whole batch, padded to its longest context (at most ``max_len``); with a state
        cache, the forward pass runs only for the contexts it does not hold.
        """
        n_model = self.model.n_items
        longest = max((sum(1 for i in c if 0 < i <= n_model) for c in contexts), default=0)
        seqs = pad_left(contexts, max(1, min(longest, self.max_len)), n_model)  # (N, T)
        with torch.inference_mode():
            last = self._last_hidden(seqs)  # (N, D)
            logits = (last @ self.item_matrix).float().numpy()  # (N, n_known)
        out = np.full((len(contexts), self.n_items + 1), -np.inf, dtype=np.float32)
        out[:, 1 : self.n_known + 1] = logits
        return out

    def _last_hidden(self, seqs: np.ndarray) -> torch.Tensor:
        """``model.last_hidden`` of the rows of ``seqs`` ``(N, T)``, through the state cache."""
        if self.states.capacity == 0:
            return self.model.last_hidden(torch.from_numpy(seqs))
        keys = [row[row != 0].tobytes() for row in seqs]  # the items, without the padding
        found = [self.states.get(key) for key in keys]
        missing = [row for row, state in enumerate(found) if state is None]
        if missing:
            fresh = self.model.last_hidden(torch.from_numpy(seqs[missing]))  # (M, D)
            for row, state in zip(missing, fresh, strict=True):
                found[row] = state.clone()  # not a view that keeps the whole batch alive
                self.states.put(keys[row], found[row])
        return torch.stack(found)  # type: ignore[arg-type]

    def recommend(
        self, history: Sequence[str], k: int = 10, exclude_seen: bool = True
    ) -> list[tuple[str, float]]:
        """Top-``k`` (item id, score) for a user whose items so far are ``history`` (oldest first).

        Items the model has never seen are ignored in the history; they cannot be recommended yet.
        """
        return self.recommend_many([history], k=k, exclude_seen=exclude_seen)[0]

    def recommend_many(
        self, histories: Sequence[Sequence[str]], k: int = 10, exclude_seen: bool = True
    ) -> list[list[tuple[str, float]]]:
        """``recommend`` for several histories at once, scored in one batch."""
        contexts = [[self.index[item] for item in h if item in self.index] for h in histories]
        scores = self.score(contexts)  # (N, n_items + 1)
        return [
            self._top(row, context if exclude_seen else [], k)
            for row, context in zip(scores, contexts, strict=True)
        ]

    def _top(self, scores: np.ndarray, seen: Sequence[int], k: int) -> list[tuple[str, float]]:
        scores[0] = -np.inf
        if seen:
            scores[list(seen)] = -np.inf
        k = min(k, int(np.isfinite(scores).sum()))
        if k <= 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(self.item_ids[i - 1], float(scores[i])) for i in top]


def request_seed(request_id: str) -> int:
    """A stable 64-bit seed from a request id (Python's ``hash`` changes between processes)."""
    return int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8).digest(), "big")


def exploration_slots(k: int, share: float, available: int) -> int:
    """Slots of a ``k``-list given to exploration: ``k * share`` rounded half up, at most
    ``available`` (so 10 x 0.1 is 1, 5 x 0.1 is 1, 4 x 0.1 is 0)."""
    return max(0, min(available, k, math.floor(k * share + 0.5)))


def blend(
    ranked: Sequence[Ranked], candidates: Sequence[str], k: int, share: float, seed: int
) -> list[Ranked]:
    """The first ``k`` of ``ranked`` with ``exploration_slots`` of them given to ``candidates``.

    Candidates are drawn uniformly without replacement and put at uniformly drawn positions,
    both from ``seed``: the same request id always gives the same list. A drawn candidate that
    is also in ``ranked`` appears once, as explored.
    """
    n = exploration_slots(k, share, len(candidates))
    if n == 0:
        return list(ranked[:k])
    rng = np.random.default_rng(seed)
    picks = [candidates[int(i)] for i in rng.choice(len(candidates), size=n, replace=False)]
    chosen = set(picks)
    rest = [r for r in ranked if r[0] not in chosen]
    length = min(k, len(rest) + n)  # >= n, since n <= k
    positions = set(rng.choice(length, size=n, replace=False).tolist())
    explored, kept = iter(picks), iter(rest)
    return [
        (next(explored), None, EXPLORE) if pos in positions else next(kept) for pos in range(length)
    ]
