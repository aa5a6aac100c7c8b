"""What an event may hold, checked field by field: ``check_record`` against ``ImportLimits``.

A row that fails is rejected with its reason, before it reaches the store, so that everything the
store holds can pass the validation gate.
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


@dataclass(frozen=True)
class ImportLimits:
    """What ``import_file`` accepts; a row outside these goes to the reject file with its reason.

    ``event_id``, ``user_id`` and ``item_id``: text (or an integer), no whitespace, at most
    ``max_id_chars`` (the store's column width and the validation gate's limit). ``event_type``:
    one of ``schema.EVENT_TYPES``. ``event_time`` (required) and ``ingested_at``: ISO-8601 or Unix
    seconds within ``[earliest, now + future]``. ``value``: a finite number. ``request_id``: at most
    ``max_request_id_chars``. No text may hold a NUL or invalid UTF-8. A CSV record or JSON line
    longer than ``max_record_chars`` is rejected unparsed. Reject files cut raw text longer than
    ``max_reject_chars``.
    """

    max_id_chars: int = 128
    max_request_id_chars: int = 64
    earliest: dt.datetime = dt.datetime(1995, 1, 1)  # naive UTC; the oldest MovieLens ratings
    future: dt.timedelta = dt.timedelta(days=1)  # clock skew between a source and us
    max_record_chars: int = 1 << 20
    max_reject_chars: int = 10_000


LIMITS = ImportLimits()
_SURROGATE = re.compile("[\ud800-\udfff]")
_WHITESPACE = re.compile(r"\s")


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


def _checked_id(value: Any, max_chars: int, spaces: bool = False) -> str | None:
    text = _checked_text(value)
    if text is not None and len(text) > max_chars:
        raise BadValue(f"longer than {max_chars} characters ({len(text)})")
    if text is not None and not spaces and _WHITESPACE.search(text):
        raise BadValue("contains whitespace")
    return text


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

    The rules are ``ImportLimits``'s; ``now`` is naive UTC. Unknown columns are ignored.
    """
    checks = {
        S.EVENT_ID: lambda v: _checked_id(v, limits.max_id_chars),
        S.USER_ID: lambda v: _checked_id(v, limits.max_id_chars),
        S.ITEM_ID: lambda v: _checked_id(v, limits.max_id_chars),
        S.EVENT_TYPE: _checked_text,
        S.EVENT_TIME: lambda v: _checked_time(v, limits, now),
        S.INGESTED_AT: lambda v: _checked_time(v, limits, now),
        S.VALUE: _checked_value,
        REQUEST_ID: lambda v: _checked_id(v, limits.max_request_id_chars, spaces=True),
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
    return (None, problems) if problems else (clean, [])
