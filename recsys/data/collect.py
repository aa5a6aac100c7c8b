"""Collection: copy the events ingested in one data interval from the store into the lake."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import sqlalchemy as sa

from recsys import schema as S
from recsys.config import Settings
from recsys.data.events import EventStore
from recsys.data.lake import EVENTS, Interval, Lake, publish

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """Fix column order and dtypes so the same events always give the same Parquet file."""
    import pandas as pd

    out = frame.reindex(columns=list(S.EVENT_COLUMNS))
    for col in (S.EVENT_ID, S.USER_ID, S.ITEM_ID, S.EVENT_TYPE, S.EVENT_TIME):
        out[col] = out[col].astype("string")
    out[S.INGESTED_AT] = pd.to_datetime(out[S.INGESTED_AT], utc=True).astype("datetime64[us, UTC]")
    out[S.VALUE] = pd.to_numeric(out[S.VALUE]).astype("float64")
    return out.sort_values([S.INGESTED_AT, S.EVENT_ID], kind="stable").reset_index(drop=True)


def drop_duplicate_ids(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep the first row of each event id (frames are ordered by ingestion time)."""
    keep = ~frame[S.EVENT_ID].duplicated(keep="first") | frame[S.EVENT_ID].isna()
    return frame[keep].reset_index(drop=True), int((~keep).sum())


class EventStoreUnavailable(ConnectionError):
    """The event store could not be reached (or failed) while an interval was read."""


def read_store(url: str, interval: Interval) -> pd.DataFrame:
    """The events ingested in ``interval``; ``EventStoreUnavailable`` (naming the store, password
    hidden) if the store cannot be reached, before anything is written."""
    try:
        return EventStore(url).read_interval(interval.start, interval.end)
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as err:
        where = sa.make_url(url).render_as_string(hide_password=True)
        cause = (str(getattr(err, "orig", None) or err).strip().splitlines() or [repr(err)])[0]
        raise EventStoreUnavailable(
            f"event store {where} unreachable while collecting {interval.id}: {cause}. Nothing "
            "was written; retry the collect when the store is back"
        ) from err


def run(settings: Settings, interval: Interval) -> dict:
    """Collect ``interval`` into ``staging/``; re-running it rewrites the same partition."""
    events = read_store(settings.event_store_url, interval)
    writers = EventStore(settings.event_store_url).writers(interval.start, interval.end)
    frame, duplicates = drop_duplicate_ids(normalise(events))
    directory = Lake(settings.lake_root).partition("staging", interval)
    meta = {"interval": interval.as_dict(), "duplicates_dropped": duplicates, "writers": writers}
    manifest = publish(frame, directory, meta)
    log.info(
        "collected %d events ingested in %s into %s (%d duplicate ids dropped)",
        len(frame),
        interval.id,
        directory,
        duplicates,
    )
    return {
        "interval": interval.id,
        "rows": len(frame),
        "path": str(directory / EVENTS),
        "sha256": manifest["sha256"],
        "duplicates_dropped": duplicates,
    }
