"""Promotion: move ``champion`` to the challenger only when the gate says it is better and safe.

Both models are judged on the same frozen evaluation set: the challenger's features snapshot,
leave-last-out test items (the last event of every user, which neither model trained on), full
ranking, through the serving class ``Recommender`` (see ``recsys.release.gate`` for the criteria and
``recsys/release/promotion.toml`` for the thresholds). The verdict, every criterion with its value
and threshold, and the reason are written on the model version (tags and a markdown description),
on the challenger's run, and as a run of the ``<experiment>-promotion`` experiment with the
comparison table as an artifact. The alias moves through ``recsys.registry.aliases`` (recorded,
compare-and-set). A rejected challenger keeps alias ``challenger``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from recsys.config import CHAMPION, PipelineConfig, Settings
from recsys.registry.tags import (
    AIRFLOW,
    CRITERION,
    GATE_JSON,
    GATE_MD,
    PROMOTION,
    TAG_COMPARED_WITH,
    TAG_DATA_END,
    TAG_DECISION,
    TAG_EVALUATION_SET,
    TAG_FEATURES,
    TAG_FEATURES_VERSION,
    TAG_GIT_COMMIT,
    TAG_METRIC,
    TAG_MODE,
    TAG_PARENT,
    TAG_POLICY,
    TAG_REASON,
    TAG_VERSION,
)
from recsys.release import notify
from recsys.release.ab import ABConfig

log = logging.getLogger(__name__)

ENV_GATE_CONFIG = "RECSYS_PROMOTION_CONFIG"


def _load(reg: Any, version: str) -> tuple[Any, str]:
    """(Recommender, "") loaded exactly as serving loads it, or (None, what went wrong)."""
    from recsys.model.recommender import Recommender

    try:
        with tempfile.TemporaryDirectory() as tmp:
            return Recommender.load(reg.version_checkpoint(version, Path(tmp))), ""
    except Exception as err:  # a broken model is a finding of the gate, not a crash
        return None, f"{type(err).__name__}: {err}"


def evaluation_set_id(split: Any, features_version: str) -> str:
    """A short hash naming the frozen evaluation set (snapshot, users' contexts and targets)."""
    digest = hashlib.sha256(features_version.encode())
    digest.update(repr((split.test_users, split.test_target)).encode())
    return digest.hexdigest()[:16]


def description(
    version: Any, run: Any, verdict: Any, champion: str, eval_set: str, ab: bool = False
) -> str:
    """The model version's page in the MLflow UI: what it is, what made it, and the decision."""
    tags, params = version.tags, run.data.params
    airflow = {k.removeprefix(AIRFLOW): v for k, v in run.data.tags.items() if AIRFLOW in k}
    decision = "A/B CANDIDATE" if ab else "PROMOTED" if verdict.promote else "REJECTED"
    lines = [
        f"## {decision} against champion {('v' + champion) if champion else '(none)'}",
        "",
        verdict.reason,
        "",
        verdict.table(),
        "",
        f"Evaluation set `{eval_set}`: leave-last-out test items of features snapshot "
        f"`{tags.get(TAG_FEATURES, '?')}`; paired bootstrap over users.",
        "",
        "## Model",
        f"- mode: **{tags.get(TAG_MODE, '?')}**, parent version: "
        f"{tags.get(TAG_PARENT) or '(none, trained from scratch)'}",
        f"- data: features `{tags.get(TAG_FEATURES, '?')}` (version "
        f"`{tags.get(TAG_FEATURES_VERSION, '?')[:12]}`), interval "
        f"{params.get('data.interval_start', '?')} .. {params.get('data.interval_end', '?')}, "
        f"{params.get('data.partitions', '?')} raw partitions, all validated by Great "
        f"Expectations: {params.get('data.all_partitions_validated', '?')}",
        f"- seed {params.get('train.seed', '?')}, git commit "
        f"`{run.data.tags.get(TAG_GIT_COMMIT, 'unknown')}`, MLflow run `{run.info.run_id}`",
        f"- Airflow: DAG `{airflow.get('dag_id', '-')}`, run `{airflow.get('run_id', '-')}`",
    ]
    return "\n".join(lines)


def run(
    settings: Settings,
    version: str,
    cfg: PipelineConfig | None = None,
    force: str | None = None,
    block: str | None = None,
) -> dict[str, Any]:
    """Judge model ``version`` against the champion and move the alias if the gate passes.

    ``force``/``block`` are an operator's reasons to promote or refuse whatever the gate says;
    the criteria are still computed and recorded next to the reason.
    """
    from recsys.data import features
    from recsys.registry.client import Registry
    from recsys.release.gate import GateConfig
    from recsys.release.pipeline import split_of

    if force is not None and block is not None:
        raise ValueError("give either force or block, not both")
    for reason in (force, block):
        if reason is not None and not reason.strip():
            raise ValueError("an operator's force or block needs a reason")
    cfg = cfg or PipelineConfig()
    gate_cfg = GateConfig.load(os.environ.get(ENV_GATE_CONFIG))
    version = str(version)
    reg = Registry(settings)
    challenger = reg.version(version)
    run_ = reg.run(challenger.run_id)
    champion = reg.alias(CHAMPION)
    if champion is not None and str(champion.version) == version:
        return {"version": version, "promoted": False, "reason": "already champion"}
    champ_version = str(champion.version) if champion else ""
    fs = features.load(settings, challenger.tags[TAG_FEATURES])
    split = split_of(fs, cfg)
    eval_set = evaluation_set_id(split, fs.manifest.get("version", ""))
    verdict, shadow = _judge(
        settings, reg, challenger, run_.data.metrics, champ_version, fs, split, gate_cfg,
        force, block,
    )  # fmt: skip
    candidate = None
    if verdict.promote and not force and champ_version and ABConfig.load().require_win:
        verdict, candidate = _start_ab(settings, version, verdict)  # the users decide
    elif verdict.promote:
        kind = "force" if force else "promote"
        verdict = _move_champion(settings, reg, version, champ_version or None, verdict, kind)
    _record(reg, settings, challenger, run_, verdict, champ_version, eval_set, gate_cfg, shadow,
            candidate is not None)  # fmt: skip
    log.info("version %s %s: %s", version, "promoted" if verdict.promote else "rejected",
             verdict.reason)  # fmt: skip
    if not verdict.promote and candidate is None:  # an A/B start is not a rejection
        _notify_rejection(settings, challenger, verdict, champ_version)
    return {
        "version": version,
        "promoted": verdict.promote,
        "reason": verdict.reason,
        "criteria": [c.row() for c in verdict.criteria],
        "evaluation_set": eval_set,
        "shadow": shadow,
        "champion_before": champ_version or None,
        "champion": version if verdict.promote else champ_version or None,
        "candidate": candidate,
    }


def _notify_rejection(settings: Settings, challenger: Any, verdict: Any, champion: str) -> None:
    failed = [c.name for c in verdict.criteria if not c.passed]
    fields = {
        "champion": f"v{champion}" if champion else "none",
        "mode": str(challenger.tags.get(TAG_MODE, "")),
        "failed criteria": ", ".join(failed) or "-",
    }
    title = f"{settings.registered_model} v{challenger.version} not promoted"
    notify.send(notify.Notice("promotion_rejected", title, verdict.reason, fields))


def _judge(settings: Settings, reg: Any, challenger: Any, metrics: dict[str, float],
           champ_version: str, fs: Any, split: Any, gate_cfg: Any, force: str | None,
           block: str | None) -> tuple[Any, dict[str, float]]:  # fmt: skip
    """The gate's verdict on the challenger against the champion (``""``: none), and the shadow
    comparison on the champion's recent real requests."""
    from recsys.release.evidence import gather, latency_p95_ms, latency_sample
    from recsys.release.gate import Criterion, Verdict, decide
    from recsys.release.shadow import compare as shadow_compare

    version = str(challenger.version)
    chal_rec, error = _load(reg, version)
    if chal_rec is None:
        return Verdict(False, f"infra validation failed: {error}", [
            Criterion("infra validation (serving code path)", None, None, "loads and answers",
                      False, error)]), {}  # fmt: skip
    chal_ev = gather(chal_rec, split, fs.item_ids, gate_cfg, metrics.get("test_old.ndcg_at_10"))
    champ_ev, champ_rec = None, None
    if champ_version:
        champ_rec, champ_error = _load(reg, champ_version)
        same_parent = challenger.tags.get(TAG_PARENT) == champ_version
        old = metrics.get("parent.test_old.ndcg_at_10") if same_parent else None
        if champ_rec is not None:
            champ_ev = gather(champ_rec, split, fs.item_ids, gate_cfg, old)
        if champ_ev is None or not champ_ev.smoke_ok:
            log.warning("champion v%s is broken (%s): judged as missing", champ_version,
                        champ_error or champ_ev and champ_ev.smoke_error)  # fmt: skip
            champ_ev = None
    if chal_ev.smoke_ok:  # time the models once, side by side: fair on a busy machine
        timed = [chal_rec] if champ_ev is None else [chal_rec, champ_rec]
        histories = latency_sample(split, fs.item_ids, gate_cfg.seed)
        p95 = latency_p95_ms(timed, histories, gate_cfg.k)
        chal_ev = dataclasses.replace(chal_ev, p95_ms=p95[0])
        if champ_ev is not None:
            champ_ev = dataclasses.replace(champ_ev, p95_ms=p95[1])
    policy, new_data = _policy(reg, challenger, fs, split)
    verdict = decide(chal_ev, champ_ev, gate_cfg, force=force, block=block, policy=policy,
                     new_data=new_data)  # fmt: skip
    if not champ_version:
        return verdict, {}
    # Replay the champion's recent real requests through the challenger.
    users = fs.sequences()[0]
    ranks = {"challenger": chal_ev.ranks}
    if champ_ev is not None:
        ranks["champion"] = champ_ev.ranks
    user_ids = [users[i] for i in split.test_users]
    return verdict, shadow_compare(settings, chal_rec, champ_version, user_ids, ranks, gate_cfg.k)


def _policy(reg: Any, challenger: Any, fs: Any, split: Any) -> tuple[str, Any]:
    """The gate's policy for the challenger's mode, and for a fine-tune one flag per evaluation
    case: whether its user, or its target item, has events since the parent's data (what the
    fine-tune trained on)."""
    import datetime as dt

    import numpy as np

    from recsys import schema as S
    from recsys.release.gate import FULL, INCREMENTAL

    parent = challenger.tags.get(TAG_PARENT, "")
    if challenger.tags.get(TAG_MODE) != INCREMENTAL or not parent:
        return FULL, None
    since = reg.version(parent).tags.get(TAG_DATA_END, "")
    if not since:  # a parent without its data end: nothing marks the new data
        return INCREMENTAL, None
    frame = fs.interactions
    recent = frame.loc[frame[S.INGESTED_AT] >= dt.datetime.fromisoformat(since)]
    users, items = set(recent[S.USER_ID]), set(recent[S.ITEM_IDX].tolist())
    ids = fs.sequences()[0]
    flags = [
        ids[u] in users or t in items
        for u, t in zip(split.test_users, split.test_target, strict=True)
    ]
    return INCREMENTAL, np.array(flags, dtype=bool)


def _record(reg: Any, settings: Settings, challenger: Any, run_: Any, verdict: Any,
            champ_version: str, eval_set: str, gate_cfg: Any,
            shadow: dict[str, float], ab: bool = False) -> None:  # fmt: skip
    """Write the decision on the version, on the challenger's run and as a promotion run."""
    verdict_word = "candidate" if ab else "promoted" if verdict.promote else "rejected"
    tags = {
        TAG_DECISION: verdict_word,
        TAG_REASON: verdict.reason[:5000],
        TAG_COMPARED_WITH: champ_version,
        TAG_EVALUATION_SET: eval_set,
        TAG_METRIC: f"ndcg_at_{gate_cfg.k}",
        TAG_POLICY: verdict.policy,
    }
    for c in verdict.criteria:
        key = CRITERION + "".join(ch if ch.isalnum() else "_" for ch in c.name)
        tags[key.rstrip("_")] = f"{'pass' if c.passed else 'FAIL'} {_num(c.challenger)} vs " \
                                f"{_num(c.champion)} ({c.threshold})"  # fmt: skip
    tags.update({f"{PROMOTION}{k}": f"{v:.4f}" for k, v in shadow.items()})
    text = description(challenger, run_, verdict, champ_version, eval_set, ab)
    if shadow:
        text += "\n\n## Shadow comparison\n" + "\n".join(
            f"- {k.removeprefix('shadow.')}: {v:.4f}" for k, v in shadow.items()
        )
    reg.tag_version(str(challenger.version), tags, description=text)
    reg.log(challenger.run_id, tags=tags, metrics=shadow)
    rows = [c.row() for c in verdict.criteria]
    decision_run = reg.create_run(
        f"promotion-v{challenger.version}",
        {**tags, TAG_VERSION: str(challenger.version)},
        experiment=f"{settings.experiment}-promotion",
    )
    gate_params = {f"gate.{k}": v for k, v in dataclasses.asdict(gate_cfg).items()}
    try:
        reg.log(decision_run, params=gate_params)
        reg.log(decision_run, metrics={"promoted": float(verdict.promote), **shadow})
        reg.log_dict(decision_run, {"verdict": verdict.reason, "criteria": rows}, GATE_JSON)
        reg.log_text(decision_run, text, GATE_MD)
    except BaseException:
        reg.end_run(decision_run, "FAILED")  # never left RUNNING in the UI
        raise
    reg.end_run(decision_run)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _start_ab(settings: Settings, version: str, verdict: Any) -> tuple[Any, str | None]:
    """Make the challenger the A/B test's candidate: champion moves only when it wins there.
    Returns the verdict (not a promotion either way) and the candidate (None: not started)."""
    from recsys.registry.alias_log import AliasError
    from recsys.release import ab

    reason = f"passed the gate; A/B test started ([ab] require_win): {verdict.reason}"
    try:
        ab.start(settings, version, reason)
    except AliasError as err:
        return dataclasses.replace(verdict, promote=False, reason=f"{err}; {verdict.reason}"), None
    return dataclasses.replace(verdict, promote=False, reason=reason), version


def _move_champion(
    settings: Settings, reg: Any, version: str, compared_with: str | None, verdict: Any, kind: str
) -> Any:
    """Move ``champion`` through the alias log (recorded, compare-and-set on ``compared_with``).

    A racing promoter that moved the champion since, or an operator's block, makes this a
    rejection that says why, not a crash.
    """
    from recsys.registry import aliases
    from recsys.registry.alias_log import AliasError, AliasLog, actor

    alias_log = AliasLog(settings.event_store_url)
    try:
        aliases.move_alias(
            reg, alias_log, CHAMPION, version, actor(), verdict.reason, kind=kind,
            expected_from=compared_with,
        )  # fmt: skip
    except AliasError as err:
        log.warning("version %s not promoted: %s", version, err)
        return dataclasses.replace(verdict, promote=False, reason=f"{err}; {verdict.reason}")
    return verdict
