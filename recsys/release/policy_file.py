"""``promotion.toml``: one file of release policies, a ``[table]`` per part, read the same way."""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

DEFAULT_CONFIG = Path(__file__).with_name("promotion.toml")
ENV_CONFIG = "RECSYS_PROMOTION_CONFIG"

T = TypeVar("T")


def load_table(cls: type[T], table: str, path: str | Path | None = None, what: str = "",
               hint: str = "") -> T:  # fmt: skip
    """``cls`` (a dataclass) from ``[table]`` of ``path``, else ``RECSYS_PROMOTION_CONFIG``'s
    file, else the shipped one; an unknown key is an error, not ignored."""
    path = Path(path or os.environ.get(ENV_CONFIG) or DEFAULT_CONFIG)
    data: dict[str, Any] = tomllib.loads(path.read_text()).get(table, {})
    unknown = sorted(set(data) - {f.name for f in fields(cls)})  # type: ignore[arg-type]
    if unknown:
        raise ValueError(f"unknown {what or f'[{table}]'} settings {unknown} in {path}{hint}")
    return cls(**data)


def spent_alpha(alpha: float, look: int) -> float:
    """The share of ``alpha`` spent at look ``look`` (1, 2, ...): ``alpha * 6 / (pi^2 k^2)``,
    which sums to ``alpha`` over every look there will ever be."""
    return alpha * 6.0 / (math.pi**2 * max(look, 1) ** 2)
