"""Who may call the API: API keys with scopes, stored as hashes in the event store's database.

A key reads ``rk_<id>_<secret>``: the id finds its row, the secret's SHA-256 is compared in
constant time (32 random bytes need no slow hash: there is nothing to guess from). Only the hash
is stored; ``recsys keys create`` shows the key once. Clients send ``Authorization: Bearer KEY``.
A revoked key is refused like an unknown one (401); a key without the route's scope gets 403.
Verified keys are kept in process for ``ttl_s`` seconds, so a revocation reaches every replica
within that time without a database read per request.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

EVENTS_WRITE, RECOMMENDATIONS_READ, ADMIN = "events:write", "recommendations:read", "admin"
SCOPES = (EVENTS_WRITE, RECOMMENDATIONS_READ, ADMIN)  # admin holds every scope
PREFIX = "rk"

metadata = sa.MetaData()
keys_table = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("scopes", sa.String(256), nullable=False),  # comma-separated
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),  # naive UTC
    sa.Column("revoked_at", sa.DateTime(), nullable=True),
)


class AuthError(Exception):
    """A refused request: ``status`` 401 (who are you?) or 403 (not allowed)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


@dataclass(frozen=True)
class Key:
    key_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: dt.datetime
    revoked_at: dt.datetime | None = None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or ADMIN in self.scopes

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.key_id,
            "name": self.name,
            "scopes": list(self.scopes),
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def parse_scopes(text: str) -> tuple[str, ...]:
    scopes = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    unknown = [s for s in scopes if s not in SCOPES]
    if not scopes or unknown:
        raise ValueError(f"scopes must be among {', '.join(SCOPES)}; got {text!r}")
    return scopes


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(key: str) -> tuple[str, str] | None:
    """``(key id, secret)`` of a well-formed key, else None."""
    parts = key.split("_")
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def bearer(header: str | None) -> str | None:
    """The key in an ``Authorization: Bearer KEY`` header."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


class KeyStore:
    """The ``api_keys`` table."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        metadata.create_all(engine)

    def create(self, scopes: str, name: str = "") -> dict[str, Any]:
        """A new key: ``{"id", "key", ...}``; the key itself is never stored or shown again."""
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32).replace("_", "-")
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        row = {"key_id": key_id, "name": name or key_id, "scopes": ",".join(parse_scopes(scopes)),
               "secret_sha256": _digest(secret), "created_at": now, "revoked_at": None}  # fmt: skip
        with self.engine.begin() as conn:
            conn.execute(keys_table.insert(), row)
        return {"key": f"{PREFIX}_{key_id}_{secret}", **self._key(row).as_dict()}

    def list(self) -> list[Key]:
        with self.engine.connect() as conn:
            rows = conn.execute(keys_table.select().order_by(keys_table.c.created_at)).mappings()
            return [self._key(r) for r in rows]

    def revoke(self, key_id: str) -> Key:
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        t = keys_table.c
        with self.engine.begin() as conn:
            done = conn.execute(
                keys_table.update()
                .where(t.key_id == key_id, t.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            row = conn.execute(keys_table.select().where(t.key_id == key_id)).mappings().first()
        if row is None:
            raise ValueError(f"no API key {key_id!r}")
        if done.rowcount == 0 and row["revoked_at"] != now:
            raise ValueError(f"API key {key_id} was already revoked at {row['revoked_at']}")
        return self._key(row)

    def verify(self, key: str) -> Key | None:
        """The key's record if it is well-formed, known, matches and is not revoked."""
        parts = split_key(key)
        if parts is None:
            return None
        key_id, secret = parts
        with self.engine.connect() as conn:
            row = conn.execute(
                keys_table.select().where(keys_table.c.key_id == key_id)
            ).mappings().first()  # fmt: skip
        if row is None or row["revoked_at"] is not None:
            return None
        if not hmac.compare_digest(row["secret_sha256"], _digest(secret)):
            return None
        return self._key(row)

    @staticmethod
    def _key(row: Any) -> Key:
        return Key(row["key_id"], row["name"], tuple(row["scopes"].split(",")),
                   row["created_at"], row["revoked_at"])  # fmt: skip


class Authenticator:
    """``check(header, scope)``: the caller's key, or ``AuthError``; verified keys cached."""

    def __init__(self, store: KeyStore, ttl_s: float = 5.0) -> None:
        self.store, self.ttl_s = store, ttl_s
        self._cache: dict[str, tuple[float, Key | None]] = {}
        self._lock = threading.Lock()

    def check(self, header: str | None, scope: str) -> Key:
        key = bearer(header)
        if key is None:
            raise AuthError(401, "an API key is required: send Authorization: Bearer <key>")
        found = self._verified(key)
        if found is None:
            raise AuthError(401, "unknown or revoked API key")
        if not found.allows(scope):
            raise AuthError(403, f"this API key lacks the scope {scope}")
        return found

    def _verified(self, key: str) -> Key | None:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        found = self.store.verify(key)
        with self._lock:
            if len(self._cache) > 10_000:  # unknown keys are cached too: bound the memory
                self._cache.clear()
            self._cache[key] = (now, found)
        return found


class RateLimiter:
    """A token bucket per key: ``rate`` a second, up to ``burst`` at once."""

    def __init__(self, rate: float, burst: float, clock: Any = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0.0 when the request may go ahead, else the seconds until it could."""
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate
