"""Exclusive locks on the lake: a ``flock`` on a local file, a lock object on an object store."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from recsys.config import LakePath


def is_local(path: LakePath) -> bool:
    return isinstance(path, Path)


@contextlib.contextmanager
def partition_lock(directory: Path) -> Iterator[None]:
    """Exclusive while a partition is (re)published or quarantined: a reader that saw a rewrite
    half done must not take it for corruption and move it away (the lock file sits beside it)."""
    with exclusive_lock(directory.parent / f".{directory.name}.lock"):
        yield


@contextlib.contextmanager
def exclusive_lock(path: LakePath) -> Iterator[None]:
    """Hold an exclusive lock named ``path``: a ``flock`` on a local file (created, with its
    folder, if missing), or a lock object on a remote filesystem."""
    if not is_local(path):
        with object_lock(path):
            yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


LOCK_STALE_S = 600.0  # a lock object older than this was left by a killed holder: broken
LOCK_WAIT_S = 900.0


class LockTimeout(TimeoutError):
    pass


@contextlib.contextmanager
def object_lock(
    path: LakePath, stale_s: float = LOCK_STALE_S, wait_s: float = LOCK_WAIT_S
) -> Iterator[None]:
    """An exclusive lock on an object store: the lock object is created with an exclusive write
    (``If-None-Match: *`` on S3), so of two writers exactly one succeeds; the other polls. It
    holds who took it and when; one older than ``stale_s`` (its holder was killed) is broken.
    Holders are short read-modify-writes of small JSON files, far below ``stale_s``."""
    token = json.dumps(
        {"owner": f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}", "at": time.time()}
    ).encode()
    deadline, delay = time.monotonic() + wait_s, 0.05
    while True:
        try:
            with path.open("xb") as fh:
                fh.write(token)
            break
        except FileExistsError:
            try:
                held = json.loads(path.read_bytes())
                if time.time() - float(held["at"]) > stale_s:
                    path.unlink(missing_ok=True)  # the next exclusive create decides who wins
                    continue
            except (FileNotFoundError, ValueError, KeyError, TypeError):
                continue  # released (or half written) meanwhile: try again at once
            if time.monotonic() > deadline:
                raise LockTimeout(
                    f"lock {path} held by {held.get('owner')} since {held.get('at')}; "
                    f"gave up after {wait_s:.0f} s (delete it if its holder is gone)"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError, ValueError):
            if path.read_bytes() == token:  # ours still (not broken as stale and retaken)
                path.unlink(missing_ok=True)
