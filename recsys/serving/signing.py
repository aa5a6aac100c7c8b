"""Served lists' request ids, signed and bound to the user they were served to.

A request id reads ``<24 hex>-<issued, base 36 seconds>-<HMAC>``: the HMAC-SHA256 (a server secret,
``RECSYS_REQUEST_SECRET``) of the random part, the issue time and the user id. Feedback naming a
request id is accepted only when the HMAC matches the user the event is about (a forged id, or one
served to another user, does not), when it was issued within ``max_age`` (the attribution window),
and when no other event already answered that list with that item (a replay). Without the
variable, the secret is made once and kept under ``$RECSYS_HOME`` (0600), which serves the
processes of one machine; replicas on several machines need the variable.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import os
import secrets
import time
import uuid
from pathlib import Path

ENV_SECRET = "RECSYS_REQUEST_SECRET"
MAC_CHARS = 22  # 132 bits of the HMAC: forging one is not a matter of trying


def load_secret(home: Path) -> bytes:
    """The signing secret: the environment's, else the one kept under ``home``."""
    if os.environ.get(ENV_SECRET):
        return os.environ[ENV_SECRET].encode()
    path = home / "secrets" / "request_secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(secrets.token_urlsafe(32))
        tmp.chmod(0o600)
        try:
            os.link(tmp, path)  # the first writer wins; the others read its secret
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_text().strip().encode()


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


class RequestSigner:
    def __init__(self, secret: bytes, max_age: dt.timedelta, clock=time.time) -> None:
        self.secret, self.max_age, self.clock = secret, max_age, clock

    def _mac(self, body: str, user_id: str | None) -> str:
        digest = hmac.new(self.secret, f"{body}|{user_id or ''}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(digest.digest()).decode()[:MAC_CHARS]

    def sign(self, user_id: str | None) -> str:
        """A fresh request id for a list served to ``user_id`` (None: anonymous)."""
        body = f"{uuid.uuid4().hex[:24]}-{_b36(int(self.clock()))}"
        return f"{body}-{self._mac(body, user_id)}"

    def check(self, request_id: str, user_id: str | None) -> str:
        """Why feedback from ``user_id`` naming ``request_id`` is refused, or "" if it is not."""
        if len(request_id) < MAC_CHARS + 3:
            return "not a request id this service issued"
        body, sep, mac = (
            request_id[: -MAC_CHARS - 1],
            request_id[-MAC_CHARS - 1],
            request_id[-MAC_CHARS:],
        )
        random, _, stamp = body.partition("-")
        if sep != "-" or len(random) != 24 or not stamp.isalnum():
            return "not a request id this service issued"
        if not hmac.compare_digest(mac, self._mac(body, user_id)):
            return "not a list served to this user (a forged or foreign request id)"
        issued = int(stamp, 36)
        if self.clock() - issued > self.max_age.total_seconds():
            return f"the list was served more than {self.max_age} ago: too late to answer it"
        return ""
