"""The event contract: what an event may hold, defined once.

The API's request model, the file importer (``check_record``) and the raw-events Great
Expectations suite (its ``{"$CONTRACT": name}`` values, filled by ``suite_values``) all apply these
rules, so an event that any edge accepts passes the validation gate after collection.

* ``event_id``, ``user_id``, ``item_id``: text (or an integer), 1 to ``ID_MAX_CHARS`` characters,
  no whitespace and no control characters (``ID_PATTERN``), valid UTF-8.
* ``event_type``: one of ``schema.EVENT_TYPES``.
* ``event_time``: ISO-8601 or Unix seconds, from ``EARLIEST``, and at most ``CLOCK_SKEW`` after the
  event's ``ingested_at``: a client clock a little fast is accepted, an event from the future is
  not. The gate allows the same skew past its interval's end.
* ``value``: a finite number; a ``rating`` needs one.
* ``request_id``: ``REQUEST_ID_PATTERN`` (the ids the API hands out).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from recsys import schema as S
from recsys.data.events import REQUEST_ID, _parse_time

ID_MAX_CHARS = 128  # the store's column width
ID_PATTERN = r"^[^\s\x00-\x1f\x7f-\x9f]+$"  # no whitespace, no control characters
REQUEST_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
EARLIEST = dt.datetime(1995, 1, 1)  # naive UTC; the oldest MovieLens ratings
CLOCK_SKEW = dt.timedelta(minutes=5)  # how far a client's clock may run ahead of ours
_ID = re.compile(ID_PATTERN)
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)
_SURROGATE = re.compile("[\ud800-\udfff]")


def suite_values() -> dict[str, Any]:
    """The contract's values by the names a suite asks for with ``{"$CONTRACT": name}``."""
    return {
        "id_pattern": ID_PATTERN,
        "id_max_chars": ID_MAX_CHARS,
        "event_types": list(S.EVENT_TYPES),
    }


@dataclass(frozen=True)
class ImportLimits:
    """What ``import_file`` accepts beyond the contract; a row outside these goes to the reject
    file with its reason.

    ``ingested_at`` within ``[earliest, now + future]``. A CSV record or JSON line longer than
    ``max_record_chars`` is rejected unparsed. Reject files cut raw text longer than
    ``max_reject_chars``. A file over ``max_bytes`` or ``max_rows`` is refused whole.
    """

    max_id_chars: int = ID_MAX_CHARS
    earliest: dt.datetime = EARLIEST
    future: dt.timedelta = dt.timedelta(days=1)  # clock skew between a source and us
    max_record_chars: int = 1 << 20
    max_reject_chars: int = 10_000
    max_bytes: int = 20 << 30  # a larger file is refused before it is read (as stored: gzipped)
    max_rows: int = 100_000_000


LIMITS = ImportLimits()


class BadValue(ValueError):
    """A value that cannot be accepted; its message is the reason."""


def _checked_text(value: Any) -> str | None:
    """Text, an integer or an integral float as text; None when missing. Raises BadValue."""
    if isinstance(value, bytes):  # a Parquet binary column
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as err:
            raise BadValue("not valid UTF-8") from err
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadValue(f"expected text or an integer, got {type(value).__name__} {value!r:.40}")
    try:
        text = str(value)
    except ValueError as err:  # an integer with thousands of digits
        raise BadValue("an integer too long to be an id") from err
    if _SURROGATE.search(text):
        raise BadValue("not valid UTF-8 (an unpaired surrogate)")
    if "\x00" in text:
        raise BadValue("contains a NUL character")
    return text


def check_id(text: str, max_chars: int = ID_MAX_CHARS) -> str:
    """``text`` if it is a valid id, else BadValue with the reason."""
    if len(text) > max_chars:
        raise BadValue(f"longer than {max_chars} characters ({len(text)})")
    if not _ID.match(text):
        raise BadValue("contains whitespace or a control character")
    return text


def check_request_id(text: str) -> str:
    if not _REQUEST_ID.match(text):
        raise BadValue(f"not a request id (expected {REQUEST_ID_PATTERN})")
    return text


def check_event_time(event_time: dt.datetime, ingested_at: dt.datetime) -> None:
    """BadValue unless ``EARLIEST <= event_time <= ingested_at + CLOCK_SKEW`` (naive UTC)."""
    if event_time < EARLIEST:
        raise BadValue(f"{event_time.isoformat()} is before {EARLIEST.isoformat()}")
    if event_time > ingested_at + CLOCK_SKEW:
        raise BadValue(
            f"{event_time.isoformat()} is more than {CLOCK_SKEW} after it was ingested "
            f"({ingested_at.isoformat(timespec='seconds')})"
        )


def _checked_id(value: Any, max_chars: int) -> str | None:
    text = _checked_text(value)
    return None if text is None else check_id(text, max_chars)


def _checked_request_id(value: Any) -> str | None:
    text = _checked_text(value)
    return None if text is None else check_request_id(text)


def _checked_time(value: Any, limits: ImportLimits, now: dt.datetime) -> dt.datetime | None:
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())
    if isinstance(value, bool) or not isinstance(value, str | int | float | dt.datetime):
        raise BadValue(f"expected ISO-8601 text or Unix seconds, got {type(value).__name__}")
    if isinstance(value, str) and (_SURROGATE.search(value) or "\x00" in value):
        raise BadValue("not valid text")
    parsed = _parse_time(value)
    if parsed is None:
        raise BadValue(f"not an ISO-8601 time or Unix seconds: {value!r:.60}")
    latest = now + limits.future
    if not limits.earliest <= parsed <= latest:
        raise BadValue(
            f"{parsed.isoformat()} is outside {limits.earliest.isoformat()} .. "
            f"{latest.isoformat(timespec='seconds')}"
        )
    return parsed


def _checked_value(value: Any) -> float | None:
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise BadValue(f"expected a number, got {type(value).__name__}")
    try:
        number = float(value)
    except (ValueError, OverflowError) as err:
        raise BadValue(f"not a number: {value!r:.40}") from err
    if not math.isfinite(number):
        raise BadValue(f"not a finite number: {value!r:.40}")
    return number


def check_record(
    rec: dict[str, Any], default_event_type: str, limits: ImportLimits, now: dt.datetime
) -> tuple[dict[str, Any] | None, list[str]]:
    """One record from a file -> ``(clean record for prepare_rows, [])`` or ``(None, problems)``.

    The contract's rules and ``ImportLimits``'s; ``now`` is naive UTC. Unknown columns are
    ignored. A record without ``ingested_at`` is a replay: it is ingested at its event time.
    """
    checks = {
        S.EVENT_ID: lambda v: _checked_id(v, limits.max_id_chars),
        S.USER_ID: lambda v: _checked_id(v, limits.max_id_chars),
        S.ITEM_ID: lambda v: _checked_id(v, limits.max_id_chars),
        S.EVENT_TYPE: _checked_text,
        S.EVENT_TIME: lambda v: _checked_time(v, limits, now),
        S.INGESTED_AT: lambda v: _checked_time(v, limits, now),
        S.VALUE: _checked_value,
        REQUEST_ID: _checked_request_id,
    }
    clean, problems = {}, []
    for column, check in checks.items():
        try:
            clean[column] = check(rec.get(column))
        except BadValue as err:
            problems.append(f"{column}: {err}")
    for column in S.REQUIRED_COLUMNS:
        if column not in clean or clean[column] is None:
            if not any(p.startswith(f"{column}:") for p in problems):
                problems.append(f"{column}: missing")
    event_type = clean.get(S.EVENT_TYPE) or default_event_type
    if S.EVENT_TYPE in clean and event_type not in S.EVENT_TYPES:
        problems.append(f"event_type: {event_type!r:.40} is not one of {', '.join(S.EVENT_TYPES)}")
    if event_type == "rating" and S.VALUE in clean and clean[S.VALUE] is None:
        problems.append("value: a rating needs a value")
    event_time, ingested = clean.get(S.EVENT_TIME), clean.get(S.INGESTED_AT)
    if event_time is not None and ingested is not None:
        try:
            check_event_time(event_time, ingested)
        except BadValue as err:
            problems.append(f"event_time: {err}")
    return (None, problems) if problems else (clean, [])
