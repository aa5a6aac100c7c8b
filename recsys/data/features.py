"""Features: per-user, time-ordered item sequences and a stable item index that only grows.

A snapshot is built for a data interval from every validated raw partition that ends by the end of
that interval, so it holds exactly the data that was known then. Items get an index the first time
they are seen and keep it forever: a model trained last week can still be read today.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from recsys import schema as S
from recsys.config import Settings
from recsys.data.lake import (
    REPORT,
    CorruptPartitionError,
    Interval,
    Lake,
    Published,
    file_sha256,
    read_json,
    read_parquet,
    write_json,
    write_parquet,
)
from recsys.data.locks import partition_lock
from recsys.data.validate import EVENT_TS

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

INTERACTIONS = "interactions.parquet"
MANIFEST = "manifest.json"


def extend_item_index(index: list[str], interactions: pd.DataFrame) -> list[str]:
    """Append unseen items by first appearance (time, then id); old positions never move."""
    known = set(index)
    first_seen = (
        interactions[~interactions[S.ITEM_ID].isin(known)]
        .groupby(S.ITEM_ID, sort=False)[EVENT_TS]
        .min()
        .reset_index()
        .sort_values([EVENT_TS, S.ITEM_ID], kind="stable")
    )
    return index + first_seen[S.ITEM_ID].tolist()


def build_interactions(events: pd.DataFrame, index: list[str]) -> pd.DataFrame:
    """Interest events mapped to item indices (1-based; 0 is padding), ordered per user by time."""
    position = {item: i + 1 for i, item in enumerate(index)}
    frame = events[events[S.EVENT_TYPE].isin(S.EVENT_TYPES)]
    out = frame[[S.USER_ID, S.ITEM_ID, EVENT_TS, S.INGESTED_AT, S.EVENT_ID]].copy()
    out[S.ITEM_IDX] = out[S.ITEM_ID].map(position).astype("int64")
    return out.sort_values([S.USER_ID, EVENT_TS, S.EVENT_ID], kind="stable").reset_index(drop=True)


def to_sequences(interactions: pd.DataFrame) -> tuple[list[str], list[list[int]]]:
    """(users, sequences): one time-ordered list of item indices per user, users sorted by id."""
    grouped = interactions.groupby(S.USER_ID, sort=True)[S.ITEM_IDX].agg(list)
    return grouped.index.tolist(), [list(map(int, s)) for s in grouped.tolist()]


def audit_frame(interactions: pd.DataFrame, min_events: int) -> pd.DataFrame:
    """One row per interaction with its position, its user's sequence length, and its role in the
    leave-last-out split, computed by the very function training and evaluation use."""
    import numpy as np

    from recsys.data.splits import leave_last_out

    frame = interactions[[S.USER_ID, S.EVENT_ID, S.ITEM_IDX, EVENT_TS]].copy()
    frame["row"] = range(1, len(frame) + 1)  # split row ids, not items: roles map back to rows
    grouped = frame.groupby(S.USER_ID, sort=True)
    frame["position"] = grouped.cumcount()
    frame["seq_len"] = grouped["row"].transform("size")
    split = leave_last_out(grouped["row"].agg(list).tolist(), min_events=min_events)
    uses = np.zeros(len(frame) + 1, dtype=np.int64)  # indexed by row id; 0 is unused
    role = np.full(len(frame) + 1, "unused", dtype=object)
    trained = np.fromiter((r for seq in split.train for r in seq), dtype=np.int64)
    for name, rows in (
        ("train", trained),
        ("valid", np.asarray(split.valid_target, dtype=np.int64)),
        ("test", np.asarray(split.test_target, dtype=np.int64)),
    ):
        np.add.at(uses, rows, 1)
        role[rows] = name
    frame["uses"] = uses[1:]  # rows are 1..n in frame order
    frame["role"] = role[1:]
    train_pos = frame["position"].where(frame["role"] == "train", -1)
    frame["last_train_position"] = train_pos.groupby(frame[S.USER_ID]).transform("max")
    return frame


def check_snapshot(interactions: pd.DataFrame, n_items: int) -> dict[str, Any]:
    """Run the ``features`` suite; raise if the snapshot must not be trained on."""
    from recsys.config import EvalConfig
    from recsys.data.suites import load_suite, validate_frame

    params = {"n_items": n_items}
    audit = audit_frame(interactions, EvalConfig().min_events)
    report = validate_frame(audit, load_suite("features"), params)
    if not report.success:
        raise InvalidFeaturesError(f"features failed validation: {report.summary()}")
    return {"success": True, "summary": report.summary(), "statistics": report.statistics}


class InvalidFeaturesError(ValueError):
    """A snapshot broke the features suite (leakage, coverage, sequence lengths)."""


@dataclass
class FeatureSet:
    """One loaded snapshot: what training and evaluation read."""

    manifest: dict[str, Any]
    item_ids: list[str]  # item_ids[i - 1] is the id of item index i
    interactions: pd.DataFrame

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def sequences(self, since: dt.datetime | None = None) -> tuple[list[str], list[list[int]]]:
        """All users' sequences, or only those of users with events ingested after ``since``."""
        frame = self.interactions
        if since is not None:
            active = frame.loc[frame[S.INGESTED_AT] >= since, S.USER_ID].unique()
            frame = frame[frame[S.USER_ID].isin(active)]
        return to_sequences(frame)


def run(settings: Settings, interval: Interval) -> dict[str, Any]:
    """Build the features snapshot as of the end of ``interval`` from validated partitions."""
    import pandas as pd

    lake = Lake(settings.lake_root)
    parts = read_checked(lake, interval.end, f"features {interval.id}")
    frames = [part.frame for part in parts]
    events = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if events.empty:
        raise ValueError(
            f"no validated events up to {interval.end}; nothing to build features from"
        )
    events = events.drop_duplicates(S.EVENT_ID, keep="first")
    with lake.lock("item_index"):
        index = extend_item_index(read_json(lake.item_index_path, []), events)
        write_json(index, lake.item_index_path)
    interactions = build_interactions(events, index)
    n_items = int(interactions[S.ITEM_IDX].max())
    validation = check_snapshot(interactions, n_items)  # before anything is published
    snap = lake.snapshot(interval)
    manifest = {
        "interval": interval.as_dict(),
        "path": str(snap),
        "partitions": [_lineage(lake, part) for part in parts],
        "n_events": len(interactions),
        "n_users": int(interactions[S.USER_ID].nunique()),
        "n_items": n_items,
        "item_ids": index[:n_items],
        "last_ingested_at": str(interactions[S.INGESTED_AT].max()),
        "validation": validation,
    }
    with partition_lock(snap):  # a reader sees the old snapshot whole, or the new one
        previous = read_json(snap / MANIFEST)
        write_parquet(interactions, snap / INTERACTIONS)
        manifest["version"] = file_sha256(snap / INTERACTIONS)  # same data, same version
        write_json(manifest, snap / MANIFEST)
    with lake.lock("latest"):
        latest = read_json(lake.latest_path)
        if latest is None or latest["interval"]["end"] <= interval.as_dict()["end"]:
            write_json(manifest, lake.latest_path)
    log.info(
        "features %s: %d events, %d users, %d items",
        interval.id,
        len(interactions),
        manifest["n_users"],
        n_items,
    )
    changed = previous is None or previous.get("version") != manifest["version"]
    return {**{k: v for k, v in manifest.items() if k != "item_ids"}, "changed": changed}


def read_checked(lake: Lake, until: dt.datetime, reader: str) -> list[Published]:
    """The raw partitions that end by ``until``, each read whole under its lock (one being
    re-published is waited for) and checked against its manifest's hash.

    Corrupt ones are moved to the quarantine (with ``corruption.json``) and the build stops with
    ``CorruptPartitionError`` naming them: nothing is built, let alone trained, on damaged bytes.
    A retry builds without them, as without any quarantined partition, until they are re-collected.
    """
    from recsys.data.quarantine import quarantine_corrupt

    parts, corrupt = [], []
    for interval in lake.folders("raw", until):
        try:
            found = lake.read_published("raw", interval)
        except CorruptPartitionError as err:
            if quarantine_corrupt(lake, err, reader) is not None:
                corrupt.append(err)
                continue
            found = lake.read_published("raw", interval)  # republished meanwhile: read again
        if found is not None:
            parts.append(found)
    if corrupt:
        first = corrupt[0]
        others = f" (and {len(corrupt) - 1} more: {', '.join(e.interval.id for e in corrupt[1:])})"
        note = (
            f"; {reader} not built. Quarantined at {lake.partition('quarantine', first.interval)}"
            f"{others if len(corrupt) > 1 else ''}; repair with `recsys quarantine release "
            f"{first.interval.id}` or rerun the ingest of that interval"
        )
        raise CorruptPartitionError(
            first.zone, first.interval, first.path, first.expected, first.actual, note
        )
    return parts


def _lineage(lake: Lake, part: Published) -> dict[str, Any]:
    """What a snapshot records of each raw partition it was built from."""
    interval, manifest = part.interval, part.manifest
    validation = manifest.get("validation", {})
    return {
        "interval": interval.id,
        "rows": manifest.get("rows"),
        "sha256": manifest.get("sha256"),
        "writers": manifest.get("writers", {}),
        "validation": {
            k: validation.get(k) for k in ("success", "summary", "statistics", "data_docs")
        },
        "report": str(lake.partition("raw", interval) / REPORT),
    }


def load(settings: Settings, interval_id: str | None = None) -> FeatureSet:
    """Load a snapshot (the latest by default)."""

    lake = Lake(settings.lake_root)
    if interval_id is None:
        latest = read_json(lake.latest_path)
        if latest is None:
            raise FileNotFoundError(
                f"no features under {lake.root}; run `recsys ingest` or the recsys_ingest DAG first"
            )
        interval_id = latest["interval"]["id"]
    interval = Interval.from_id(interval_id)
    snap = lake.snapshot(interval)
    with partition_lock(snap):  # not while it is rewritten
        manifest = read_json(snap / MANIFEST)
        if manifest is None:
            raise FileNotFoundError(f"no features snapshot {interval_id} at {snap}")
        digest = file_sha256(snap / INTERACTIONS)
        if digest != manifest["version"]:  # the version is the content hash
            expected, note = manifest["version"], "; rebuild it: recsys ingest over its interval"
            path = snap / INTERACTIONS
            raise CorruptPartitionError("features snapshot", interval, path, expected, digest, note)
        frame = read_parquet(snap / INTERACTIONS)
    return FeatureSet(manifest, manifest["item_ids"], frame)
