"""MovieLens ratings as events: 100K (from the ``recbole==1.2.1`` wheel), 1M and "latest".

MovieLens' licence forbids redistribution, so the project never ships the data. MovieLens-100K
comes from the recbole wheel, downloaded with pip (from the package index, the only network it
needs) and read straight out of the zip; other releases are read from files the user downloaded.

Formats (keys of ``FORMATS``), detected by ``detect_format`` from the name and the first line:

- ``wheel``: the recbole ``.whl`` (its ml-100k ``.inter``); event ids ``ml100k-<user>-<item>-<ts>``;
- ``inter``: a RecBole ``.inter`` file (tab-separated, typed header); ids ``ml100k-...``;
- ``udata``: MovieLens-100K ``u.data`` (``user item rating timestamp``, tabs); ids ``ml100k-...``;
- ``dat``: MovieLens-1M ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``); ids
  ``ml-<user>-<item>-<ts>``;
- ``csv``: MovieLens "latest" ``ratings.csv`` (header ``userId,movieId,rating,timestamp``); ids
  ``ml-<user>-<item>-<ts>``.
"""

from __future__ import annotations

import csv
import io
import logging
import re
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
CSV_HEADER = "userId,movieId,rating,timestamp"
FORMATS = {
    "wheel": "MovieLens-100K (recbole wheel)",
    "inter": "MovieLens-100K (.inter)",
    "udata": "MovieLens-100K (u.data)",
    "dat": "MovieLens-1M (ratings.dat)",
    "csv": "MovieLens latest (ratings.csv)",
}
_NUMBER = r"\d+(?:\.\d+)?"
_UDATA_LINE = re.compile(rf"\d+\t\d+\t{_NUMBER}\t{_NUMBER}")
_DAT_LINE = re.compile(rf"\d+::\d+::{_NUMBER}::{_NUMBER}")


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


def read_ratings_dat(text: str) -> list[dict[str, Any]]:
    """Parse MovieLens-1M's ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``)."""
    records = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("::")
        if len(fields) != 4:
            raise ValueError(f"ratings.dat line {n}: expected UserID::MovieID::Rating::Timestamp")
        records.append(_record(*fields, prefix="ml"))
    return records


def read_ratings_csv(text: str) -> list[dict[str, Any]]:
    """Parse MovieLens "latest" ``ratings.csv`` (header ``userId,movieId,rating,timestamp``)."""
    reader = csv.reader(io.StringIO(text))
    header = ",".join(next(reader, []))
    if header != CSV_HEADER:
        raise ValueError(f"unexpected ratings.csv header {header!r}; expected {CSV_HEADER!r}")
    records = []
    for row in reader:
        if len(row) != 4:
            raise ValueError(f"ratings.csv line {reader.line_num}: expected 4 fields, got {row}")
        records.append(_record(*row, prefix="ml"))
    return records


def _record(user: str, item: str, rating: str, ts: str, prefix: str = "ml100k") -> dict[str, Any]:
    ts_int = int(float(ts))
    return {
        S.EVENT_ID: f"{prefix}-{user}-{item}-{ts_int}",
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
        return _read_wheel(path)
    text = path.read_text(encoding="utf-8")
    return read_inter(text) if path.suffix == ".inter" else read_udata(text)


def detect_format(path: Path, first_line: str | None = None) -> str:
    """The MovieLens format of ``path`` (a key of ``FORMATS``), from its name and first line.

    ``first_line`` is read from the file when not given. Raises ``ValueError`` for anything else.
    """
    name = path.name.lower()
    if name.endswith(".whl"):
        return "wheel"
    if first_line is None:
        with path.open(encoding="utf-8", errors="replace") as fh:
            first_line = fh.readline()
    line = first_line.strip().lstrip("\ufeff")
    if name.endswith(".inter") or line.startswith("user_id:"):
        return "inter"
    if line == CSV_HEADER:
        return "csv"
    if _DAT_LINE.fullmatch(line):
        return "dat"
    if _UDATA_LINE.fullmatch(line):
        return "udata"
    raise ValueError(
        f"{path}: unknown MovieLens format (first line {line[:80]!r}); expected a recbole .whl, "
        f"a RecBole .inter, u.data (tab-separated), ratings.dat (UserID::MovieID::Rating::"
        f"Timestamp) or ratings.csv (header {CSV_HEADER})"
    )


def load(path: Path) -> list[dict[str, Any]]:
    """Records of any MovieLens ratings file of ``FORMATS`` (or the recbole wheel)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    fmt = detect_format(path)
    log.info("reading %s as %s", path, FORMATS[fmt])
    if fmt == "wheel":
        return _read_wheel(path)
    text = path.read_text(encoding="utf-8").lstrip("\ufeff")
    readers = {
        "inter": read_inter,
        "udata": read_udata,
        "dat": read_ratings_dat,
        "csv": read_ratings_csv,
    }
    return readers[fmt](text)


def _read_wheel(path: Path) -> list[dict[str, Any]]:
    """MovieLens-100K out of the recbole wheel at ``path``."""
    try:
        with zipfile.ZipFile(path) as zf:
            if INTER_PATH not in zf.namelist():
                raise ValueError(f"{path}: not a recbole wheel (it has no {INTER_PATH})")
            return read_inter(zf.read(INTER_PATH).decode("utf-8"))
    except zipfile.BadZipFile as err:
        raise ValueError(f"{path}: not a wheel ({err})") from err
