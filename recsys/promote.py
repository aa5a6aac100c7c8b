"""Promotion: move ``champion`` to the challenger only when it beats the champion.

Both models are scored on the same evaluation data: the challenger's features snapshot, leave-last-
out test items, full ranking. The decision and its reason are written on the model version (tags and
description) and on the challenger's MLflow run.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.config import CHAMPION, PipelineConfig, PromotionPolicy, Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(
    challenger: dict[str, float], champion: dict[str, float] | None, policy: PromotionPolicy
) -> Decision:
    """Pure promotion rule on metrics computed on the same data."""
    metric = policy.metric
    if metric not in challenger:
        raise KeyError(f"challenger has no {metric!r} metric; evaluate it first")
    new = challenger[metric]
    if champion is None:
        return Decision(True, f"no champion yet; challenger {metric} {new:.5f}")
    old = champion[metric]
    delta = f"{new - old:+.5f}, margin {policy.margin}"
    change = f"{metric} {new:.5f} vs champion's {old:.5f} ({delta})"
    if new > old + policy.margin:
        return Decision(True, f"beats the champion: {change}")
    return Decision(False, f"does not beat the champion: {change}")


def run(settings: Settings, version: str, cfg: PipelineConfig | None = None) -> dict[str, Any]:
    """Compare model ``version`` with the champion and move the alias if it wins."""
    from recsys import features
    from recsys.model import Checkpoint
    from recsys.pipeline import TAG_FEATURES, evaluate_checkpoint, split_of
    from recsys.registry import Registry

    cfg = cfg or PipelineConfig()
    version = str(version)
    reg = Registry(settings)
    challenger = reg.version(version)
    run = reg.run(challenger.run_id)
    metric = cfg.promotion.metric
    chal_metrics = {
        k.removeprefix("test."): v for k, v in run.data.metrics.items() if k.startswith("test.")
    }
    champion = reg.alias(CHAMPION)
    champ_metrics: dict[str, float] | None = None
    if champion is not None and str(champion.version) == version:
        return {"version": version, "promoted": False, "reason": "already champion"}
    if champion is not None:
        fs = features.load(settings, challenger.tags[TAG_FEATURES])
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = Checkpoint.load(reg.version_checkpoint(champion.version, Path(tmp)))
        champ_metrics = evaluate_checkpoint(ckpt, split_of(fs, cfg), fs.n_items, cfg.eval.k)
    decision = decide(chal_metrics, champ_metrics, cfg.promotion)
    champ_version = str(champion.version) if champion else ""
    if decision.promote:
        decision = _move_champion(settings, reg, version, champ_version or None, decision)
    verdict = "promoted" if decision.promote else "rejected"
    tags = {
        "promotion.decision": verdict,
        "promotion.reason": decision.reason,
        "promotion.compared_with": champ_version,
        "promotion.metric": metric,
    }
    if champ_metrics is not None:
        tags["promotion.champion_value"] = f"{champ_metrics[metric]:.4f}"
    description = (
        f"**{verdict}** against champion "
        f"{'v' + champ_version if champ_version else '(none)'}: {decision.reason}"
    )
    reg.tag_version(version, tags, description=description)
    reg.log(
        challenger.run_id,
        tags=tags,
        metrics={f"champion.{k}": v for k, v in (champ_metrics or {}).items()},
    )
    log.info("version %s %s: %s", version, verdict, decision.reason)
    return {
        "version": version,
        "promoted": decision.promote,
        "reason": decision.reason,
        "champion_before": champ_version or None,
        "champion": version if decision.promote else champ_version or None,
    }


def _move_champion(
    settings: Settings, reg: Any, version: str, compared_with: str | None, decision: Decision
) -> Decision:
    """Move ``champion`` through the alias log (recorded, compare-and-set on ``compared_with``).

    A racing promoter that moved the champion since, or an operator's block, makes this a
    rejection that says why, not a crash.
    """
    from recsys import aliases

    alias_log = aliases.AliasLog(settings.event_store_url)
    try:
        aliases.move_alias(
            reg,
            alias_log,
            CHAMPION,
            version,
            aliases.actor(),
            decision.reason,
            expected_from=compared_with,
        )
    except aliases.AliasError as err:
        log.warning("version %s not promoted: %s", version, err)
        return Decision(False, f"{err}; {decision.reason}")
    return decision
