"""Shadow comparison: before the alias moves, replay recent real requests (the impressions that
serving logged for the champion) through the challenger and record how much its lists overlap
with what users were actually shown, and how it scores offline on those same users."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import numpy as np

SHADOW_REQUESTS = 500  # the most recent model-ranked impressions of the champion


def overlap_at_k(shown: Sequence[str], recommended: Sequence[str]) -> float:
    """Share of the served list that the other model would also have put in its list."""
    if not shown:
        raise ValueError("an empty served list has no overlap")
    return len(set(shown) & set(recommended)) / len(shown)


def compare(
    settings: Any,
    challenger: Any,
    champion_version: str,
    user_ids: Sequence[str],
    ranks: dict[str, np.ndarray],
    k: int,
    now: dt.datetime | None = None,
    days: float = 7.0,
) -> dict[str, float]:
    """``shadow.*`` metrics of ``challenger`` (a ``Recommender``) on the champion's recent requests.

    ``user_ids[i]`` is the user behind row ``i`` of each array in ``ranks`` (model name -> 0-based
    ranks on the evaluation set); the offline NDCG@k of each model is reported on the users seen
    in the replayed requests. Users' histories are read from the event store as they are now.
    """
    from recsys.data.events import EventStore
    from recsys.data.impressions import prepare, read
    from recsys.release.gate import ndcg_per_user

    store = EventStore(settings.event_store_url)
    prepare(store.engine)
    end = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(tzinfo=None)
    shown = [
        imp
        for imp in read(store.engine, end - dt.timedelta(days=days), end + dt.timedelta(seconds=1))
        if imp.model_version == champion_version and not imp.cold_start and imp.items
    ][-SHADOW_REQUESTS:]
    if not shown:
        return {"shadow.n_requests": 0.0}
    max_len = challenger.checkpoint.model_config.max_len
    overlaps = []
    for imp in shown:
        history = store.history(imp.user_id, limit=max_len) if imp.user_id else []
        recs = [item for item, _ in challenger.recommend(history, k=len(imp.items))]
        overlaps.append(overlap_at_k(imp.items, recs))
    out = {
        "shadow.n_requests": float(len(shown)),
        f"shadow.overlap_at_{k}": float(np.mean(overlaps)),
    }
    users = {imp.user_id for imp in shown}
    mask = np.array([u in users for u in user_ids])
    out["shadow.n_users_evaluated"] = float(mask.sum())
    if mask.any():
        for name, model_ranks in ranks.items():
            out[f"shadow.{name}.ndcg_at_{k}"] = float(ndcg_per_user(model_ranks[mask], k).mean())
    return out
