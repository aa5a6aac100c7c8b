"""Freshness as a service level: how far the live model's training data lags the newest data.

Every model version records its data watermark (``recsys.data_last_ingested_at``: the last
``ingested_at`` of the snapshot it was trained on). The newest validated data is the latest
features snapshot's watermark: everything the pipeline has collected, validated and could train
on. The live model's lag is the difference; ``max_lag_hours`` in the ``[freshness]`` table of
``promotion.toml`` is the objective, and ``recsys_online_guard`` fails while it is broken (for
example after two days of rejected fine-tunes).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.config import CHAMPION, Settings
from recsys.release.policy_file import load_table


@dataclass(frozen=True)
class FreshnessConfig:
    max_lag_hours: float = 48.0  # the live model may trail the newest validated data this much

    def __post_init__(self) -> None:
        if not self.max_lag_hours > 0:
            raise ValueError(f"max_lag_hours must be > 0, got {self.max_lag_hours}")

    @classmethod
    def load(cls, path: str | Path | None = None) -> FreshnessConfig:
        return load_table(cls, "freshness", path)


class StaleModelError(RuntimeError):
    """The live model trails the newest validated data by more than the objective."""


def _time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    ts = dt.datetime.fromisoformat(str(value))  # naive: UTC, as the event store writes it
    return ts.replace(tzinfo=dt.UTC) if ts.tzinfo is None else ts.astimezone(dt.UTC)


@dataclass(frozen=True)
class Freshness:
    """The live model's watermark against the newest validated data's (UTC times)."""

    version: str | None
    model_data_end: dt.datetime | None
    newest_data: dt.datetime | None
    max_lag_hours: float

    @classmethod
    def of(cls, version: str | None, model_data_end: str | None, newest_data: str | None,
           max_lag_hours: float) -> Freshness:  # fmt: skip
        return cls(version, _time(model_data_end), _time(newest_data), max_lag_hours)

    @property
    def lag_hours(self) -> float | None:
        """Hours of validated data the live model has not been trained on (0 when none)."""
        if self.model_data_end is None or self.newest_data is None:
            return None
        return max((self.newest_data - self.model_data_end).total_seconds() / 3600.0, 0.0)

    @property
    def ok(self) -> bool:
        """Within the objective; also when there is no live model or no data to lag behind."""
        lag = self.lag_hours
        return lag is None or lag <= self.max_lag_hours

    def as_dict(self) -> dict[str, Any]:
        lag = self.lag_hours
        return {
            "version": self.version,
            "model_data_end": self.model_data_end.isoformat() if self.model_data_end else None,
            "newest_data": self.newest_data.isoformat() if self.newest_data else None,
            "lag_hours": None if lag is None else round(lag, 2),
            "max_lag_hours": self.max_lag_hours,
            "ok": self.ok,
        }

    def line(self) -> str:
        """One sentence for ``recsys registry`` and logs."""
        if self.version is None:
            return "freshness: no live model (no champion yet)"
        lag = self.lag_hours
        if lag is None:
            return f"freshness: live model v{self.version}, no validated data to compare with"
        word = "ok" if self.ok else "BROKEN"
        return (
            f"freshness: live model v{self.version} trained to data of "
            f"{self.model_data_end:%Y-%m-%d %H:%M}, newest validated data "
            f"{self.newest_data:%Y-%m-%d %H:%M}: {lag:.1f} h behind "
            f"(objective {self.max_lag_hours:g} h: {word})"
        )


def newest_validated(settings: Settings) -> str | None:
    """The latest features snapshot's watermark, or None before the first snapshot."""
    from recsys.data.lake import Lake, read_json

    latest = read_json(Lake(settings.lake_root).latest_path)
    return latest.get("last_ingested_at") if latest else None


def live(settings: Settings, cfg: FreshnessConfig | None = None) -> Freshness:
    """The champion's freshness, read from the registry and the lake."""
    from recsys.registry.client import Registry
    from recsys.registry.tags import TAG_DATA_END

    cfg = cfg or FreshnessConfig.load()
    champion = Registry(settings).alias(CHAMPION)
    if champion is None:
        return Freshness.of(None, None, newest_validated(settings), cfg.max_lag_hours)
    return Freshness.of(str(champion.version), champion.tags.get(TAG_DATA_END),
                        newest_validated(settings), cfg.max_lag_hours)  # fmt: skip


def check(settings: Settings, cfg: FreshnessConfig | None = None) -> dict[str, Any]:
    """The live model's freshness; raises ``StaleModelError`` when the objective is broken."""
    state = live(settings, cfg)
    if not state.ok:
        raise StaleModelError(
            f"{state.line()}: no fine-tune or retrain was promoted for too long; see the "
            f"rejections with `recsys registry` and the gate tables on the versions' pages"
        )
    return state.as_dict()
