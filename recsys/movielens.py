"""MovieLens-100K, read from the ``recbole==1.2.1`` wheel on PyPI.

MovieLens' licence forbids redistribution, so the project never ships the data: it downloads the
wheel with pip (from the package index, the only network it needs) and reads the ``.inter`` file
straight out of the zip.
"""

from __future__ import annotations

import csv
import io
import logging
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

from recsys import schema as S

log = logging.getLogger(__name__)

RECBOLE = "recbole==1.2.1"
WHEEL_NAME = "recbole-1.2.1-py3-none-any.whl"
INTER_PATH = "recbole/dataset_example/ml-100k/ml-100k.inter"


def fetch_wheel(cache_dir: Path) -> Path:
    """Return the recbole wheel, downloading it once into ``cache_dir`` with pip."""
    wheel = cache_dir / WHEEL_NAME
    if wheel.exists():
        return wheel
    cache_dir.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s (MovieLens-100K ships inside it)", RECBOLE)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "-q",
        RECBOLE,
        "-d",
        str(cache_dir),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not wheel.exists():
        raise RuntimeError(f"could not download {RECBOLE} with pip: {done.stderr.strip()[-500:]}")
    return wheel


def read_inter(text: str) -> list[dict[str, Any]]:
    """Parse a RecBole ``.inter`` file (columns ``user_id item_id rating timestamp``)."""
    reader = csv.reader(io.StringIO(text), delimiter="\t")
    header = [h.split(":")[0] for h in next(reader)]
    expected = ["user_id", "item_id", "rating", "timestamp"]
    if header[:4] != expected:
        raise ValueError(f"unexpected .inter header {header}; expected {expected}")
    return [_record(user, item, rating, ts) for user, item, rating, ts, *_ in reader]


def read_udata(text: str) -> list[dict[str, Any]]:
    """Parse MovieLens-100K's ``u.data`` (``user item rating timestamp``, tab-separated)."""
    return [_record(*line.split("\t")[:4]) for line in text.splitlines() if line.strip()]


def _record(user: str, item: str, rating: str, ts: str) -> dict[str, Any]:
    ts_int = int(float(ts))
    return {
        S.EVENT_ID: f"ml100k-{user}-{item}-{ts_int}",
        S.USER_ID: user,
        S.ITEM_ID: item,
        S.EVENT_TYPE: "rating",
        S.EVENT_TIME: ts_int,
        S.VALUE: float(rating),
    }


def load_ml100k(path: Path | None, cache_dir: Path) -> list[dict[str, Any]]:
    """Records of MovieLens-100K from a wheel, an ``.inter`` file or a ``u.data`` file."""
    path = path or fetch_wheel(cache_dir)
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as zf:
            return read_inter(zf.read(INTER_PATH).decode("utf-8"))
    text = path.read_text(encoding="utf-8")
    return read_inter(text) if path.suffix == ".inter" else read_udata(text)
