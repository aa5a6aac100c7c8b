"""The registry table: every model version with its aliases, metrics and promotion decision."""

from __future__ import annotations

from typing import Any

from recsys.config import Settings
from recsys.registry.client import Registry
from recsys.registry.tags import (
    POPULARITY,
    TAG_DATA_END,
    TAG_DECISION,
    TAG_FEATURES,
    TAG_MODE,
    TAG_PARENT,
    TAG_POLICY,
    TAG_REASON,
    TEST,
)


def _number(tag: str | None) -> float | None:
    """A metric tag as a number (MLflow stores tags as text); None when it is missing."""
    try:
        return float(tag) if tag not in (None, "") else None
    except ValueError:
        return None


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def registry_rows(settings: Settings) -> list[dict[str, Any]]:
    """One row per model version: aliases, mode, parent, test metrics, decision, features."""
    reg = Registry(settings)
    rows = []
    for v in reg.versions():
        rows.append(
            {
                "version": v.version,
                "aliases": list(v.aliases),
                "mode": v.tags.get(TAG_MODE, ""),
                "parent": v.tags.get(TAG_PARENT, ""),
                "ndcg_at_10": _number(v.tags.get(f"{TEST}ndcg_at_10")),
                "hr_at_10": _number(v.tags.get(f"{TEST}hr_at_10")),
                "popularity_ndcg_at_10": _number(v.tags.get(f"{POPULARITY}ndcg_at_10")),
                "decision": v.tags.get(TAG_DECISION, ""),
                "features": v.tags.get(TAG_FEATURES, ""),
                "data_end": v.tags.get(TAG_DATA_END, ""),  # its data watermark
                "policy": v.tags.get(TAG_POLICY, ""),
                "reason": v.tags.get(TAG_REASON, ""),
            }
        )
    return rows


def format_registry(rows: list[dict[str, Any]]) -> list[str]:
    """The rows as the table ``recsys registry`` and the demo print."""
    head = (
        f"{'version':>7}  {'aliases':<20} {'mode':<11} {'parent':>6}  {'NDCG@10':>7}  "
        f"{'HR@10':>6}  {'popularity NDCG@10':>18}  {'decision':<9} features"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['version']:>7}  {','.join(r['aliases']):<20} {r['mode']:<11} {r['parent']:>6}  "
            f"{_cell(r['ndcg_at_10']):>7}  {_cell(r['hr_at_10']):>6}  "
            f"{_cell(r['popularity_ndcg_at_10']):>18}  "
            f"{r['decision']:<9} {r['features']}"
        )
    decided = [r for r in rows if r["reason"]]
    if decided:
        lines.append("decisions (the gate's table is on each version's page in MLflow):")
    for r in decided:
        reason = r["reason"] if len(r["reason"]) <= 160 else r["reason"][:157] + "..."
        lines.append(f"  v{r['version']} ({r['policy'] or 'full'} policy): {reason}")
    return lines
