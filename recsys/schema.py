"""Column names and the documented event schema, shared by every stage.

An *event* is one interaction of a user with an item. Files given to ``recsys events import`` and
rows in the event store use these columns:

=============  ========  ==========================================================================
column         required  meaning
=============  ========  ==========================================================================
event_id       no        unique id; derived from the other columns when missing (idempotent import)
user_id        yes       user identifier (string)
item_id        yes       item identifier (string)
event_type     no        one of ``EVENT_TYPES`` (default ``rating`` for MovieLens, else ``view``)
event_time     yes       when it happened: ISO-8601 (UTC if no offset) or Unix seconds
ingested_at    no        when it reached us; defaults to ``event_time`` on import (replay)
value          no        a number (rating, price, ...)
=============  ========  ==========================================================================
"""

from __future__ import annotations

EVENT_ID = "event_id"
USER_ID = "user_id"
ITEM_ID = "item_id"
EVENT_TYPE = "event_type"
EVENT_TIME = "event_time"
INGESTED_AT = "ingested_at"
VALUE = "value"
ITEM_IDX = "item_idx"

EVENT_COLUMNS = (EVENT_ID, USER_ID, ITEM_ID, EVENT_TYPE, EVENT_TIME, INGESTED_AT, VALUE)
REQUIRED_COLUMNS = (USER_ID, ITEM_ID, EVENT_TIME)

# Event types that express interest in an item; all of them become training interactions.
EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "rating")
