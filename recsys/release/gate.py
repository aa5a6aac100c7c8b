"""The promotion gate: pure functions that decide whether a challenger replaces the champion.

The gate compares two models on the same frozen evaluation set, user by user, under the policy of
the challenger's mode:

* a full retrain must improve NDCG@k *with confidence*: the lower bound of a seeded paired
  bootstrap over users of (challenger - champion) must exceed ``margin``;
* an incremental fine-tune must be non-inferior overall (that lower bound above the small negative
  ``incremental_margin``) and better where it was trained to be: on the cases whose user or
  target item has events since its parent (the ``new_data_confidence`` bound there above
  ``new_data_margin``), and on the others a mean change above ``-forgetting_tolerance``;
* guard-rails must not regress past their tolerance: HR@k, catalogue coverage, a cold-start
  slice, the old-data slice of an incremental model (forgetting), p95 scoring latency;
* the challenger must load and answer through the serving code path (infra validation).

Everything here takes plain numbers and arrays; ``recsys.release.promote`` does the I/O.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_CONFIG = Path(__file__).with_name("promotion.toml")
BOOT_CHUNK = 200  # bootstrap resamples drawn at once: (200, n_users) indices


@dataclass(frozen=True)
class GateConfig:
    """Every threshold of the gate, from ``recsys/release/promotion.toml`` (or another file)."""

    k: int = 10
    margin: float = 0.0  # the NDCG@k improvement's lower bound must exceed this
    n_boot: int = 1000
    confidence: float = 0.95  # one-sided: the lower bound is the (1 - confidence) quantile
    seed: int = 0
    hr_tolerance: float = 0.01  # absolute HR@k drop allowed
    coverage_tolerance: float = 0.10  # relative coverage drop allowed
    cold_start_max_events: int = 5  # users with at most this many events form the cold slice
    cold_start_tolerance: float = 0.01  # absolute NDCG@k drop allowed on the cold slice
    forgetting_tolerance: float = 0.01  # absolute NDCG@k drop allowed on the old-data slice
    latency_tolerance: float = 0.5  # relative p95 latency increase allowed...
    latency_floor_ms: float = 5.0  # ...above this floor (below it, differences are timer noise)
    latency_max_ms: float = 50.0  # and an absolute ceiling on the challenger's p95
    incremental_margin: float = -0.01  # a fine-tune's overall lower bound must exceed this...
    new_data_margin: float = 0.0  # ...and its bound on the new data (users or items) this,
    new_data_confidence: float = 0.5  # at this one-sided confidence (0.5: the median gain)
    min_new_users: int = 10  # fewer cases with new data in the evaluation set: it cannot show it

    @classmethod
    def load(cls, path: str | Path | None = None) -> GateConfig:
        """Read the ``[gate]`` table of a TOML file; unknown keys are an error, not ignored."""
        data = tomllib.loads(Path(path or DEFAULT_CONFIG).read_text()).get("gate", {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown promotion settings {unknown} in {path or DEFAULT_CONFIG}")
        cfg = cls(**data)
        confidences = (cfg.confidence, cfg.new_data_confidence)
        if not all(0.5 <= c < 1 for c in confidences) or cfg.n_boot < 100 or cfg.k < 1:
            raise ValueError(f"invalid promotion settings: {cfg}")
        return cfg


@dataclass(frozen=True)
class Criterion:
    """One line of the gate's table."""

    name: str
    challenger: float | None
    champion: float | None
    threshold: str  # the rule in words, e.g. ">= champion - 0.01"
    passed: bool
    note: str = ""

    def row(self) -> dict[str, Any]:
        return {
            "criterion": self.name,
            "challenger": self.challenger,
            "champion": self.champion,
            "threshold": self.threshold,
            "passed": self.passed,
            "note": self.note,
        }


FULL, INCREMENTAL = "full", "incremental"  # the promotion policies, by the challenger's mode
POLICIES = {
    FULL: "full retrain: clearly better overall",
    INCREMENTAL: "fine-tune: non-inferior overall, better on the new data, no worse on the old",
}


@dataclass(frozen=True)
class Verdict:
    promote: bool
    reason: str
    criteria: list[Criterion] = field(default_factory=list)
    policy: str = FULL

    def table(self) -> str:
        """The criteria as a markdown table (the model version's description embeds it)."""
        lines = [
            f"Policy: **{self.policy}** ({POLICIES[self.policy]}).",
            "",
            "| criterion | challenger | champion | threshold | passed |",
            "|---|---|---|---|---|",
        ]
        for c in self.criteria:
            lines.append(
                f"| {c.name} | {_fmt(c.challenger)} | {_fmt(c.champion)} | {c.threshold} | "
                f"{'yes' if c.passed else '**no**'} |"
            )
        return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


def ndcg_per_user(ranks: np.ndarray, k: int) -> np.ndarray:
    """NDCG@k of each user from the 0-based rank of their single target."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)


def paired_bootstrap(
    challenger: np.ndarray,
    champion: np.ndarray,
    n_boot: int,
    confidence: float,
    seed: int,
    groups: np.ndarray | None = None,
) -> tuple[float, float, float]:
    """(mean difference, lower bound, upper bound) of ``challenger - champion``, paired by case.

    Cases are resampled with replacement ``n_boot`` times with a seeded generator: the same
    inputs and seed always give the same bounds. The bounds are the one-sided
    ``1 - confidence`` and ``confidence`` quantiles of the resampled mean difference.
    With ``groups`` (one label per case, e.g. the user of each event) whole groups are resampled
    instead, since cases of one group are not independent; the mean stays the mean over cases.
    """
    diff = np.asarray(challenger, dtype=np.float64) - np.asarray(champion, dtype=np.float64)
    if diff.ndim != 1 or diff.size == 0:
        raise ValueError("paired bootstrap needs two equal-length, non-empty per-case arrays")
    if groups is None:
        sums, counts = diff, np.ones_like(diff)
    else:
        groups = np.asarray(groups)
        if groups.shape != diff.shape:
            raise ValueError(f"{groups.size} group labels for {diff.size} cases")
        _, label = np.unique(groups, return_inverse=True)
        sums, counts = np.bincount(label, weights=diff), np.bincount(label).astype(np.float64)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, BOOT_CHUNK):
        n = min(BOOT_CHUNK, n_boot - start)
        idx = rng.integers(0, sums.size, size=(n, sums.size))  # (n, groups)
        means[start : start + n] = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    low, high = np.quantile(means, [1 - confidence, confidence])
    return float(diff.mean()), float(low), float(high)


@dataclass(frozen=True)
class ModelEvidence:
    """What the gate knows about one model, all on the same evaluation set."""

    ranks: np.ndarray  # 0-based rank of each evaluation user's target
    coverage: float  # catalogue coverage of the top-k lists
    p95_ms: float  # p95 latency of one serving request
    cold_ranks: np.ndarray | None = None  # ranks of the cold-start slice's users
    old_ndcg: float | None = None  # NDCG@k on the old-data slice (incremental models)
    smoke_ok: bool = True  # loaded and answered through the serving code path
    smoke_error: str = ""


def _hr(ranks: np.ndarray, k: int) -> float:
    return float((np.asarray(ranks) < k).mean())


def criteria(
    challenger: ModelEvidence,
    champion: ModelEvidence | None,
    cfg: GateConfig,
    policy: str = FULL,
    new_data: np.ndarray | None = None,
) -> list[Criterion]:
    """Every criterion of the gate, measured: infra validation, the NDCG@k gain's bootstrap and
    the guard rails against the champion (none but infra validation without one). Under the
    incremental policy the overall gain need only be non-inferior, and ``new_data`` (one flag per
    evaluation user: events since the challenger's parent) marks where it must be better."""
    k = cfg.k
    crit: list[Criterion] = [
        Criterion(
            "infra validation (serving code path)",
            None,
            None,
            "loads and answers",
            challenger.smoke_ok,
            challenger.smoke_error,
        )  # fmt: skip
    ]
    if champion is None:
        ndcg = float(ndcg_per_user(challenger.ranks, k).mean())
        crit.append(Criterion(f"ndcg@{k}", ndcg, None, "no champion: any", True,
                              "no champion (missing or broken)"))  # fmt: skip
    else:
        if len(challenger.ranks) != len(champion.ranks):
            raise ValueError("challenger and champion were evaluated on different users")
        new, old = ndcg_per_user(challenger.ranks, k), ndcg_per_user(champion.ranks, k)
        crit.append(_gain(new, old, cfg, policy))
        if policy == INCREMENTAL:
            crit.extend(_slice_gains(new, old, cfg, new_data))
        hr_new, hr_old = _hr(challenger.ranks, k), _hr(champion.ranks, k)
        crit.append(Criterion(f"hr@{k}", hr_new, hr_old, f">= champion - {cfg.hr_tolerance}",
                              hr_new >= hr_old - cfg.hr_tolerance))  # fmt: skip
        floor = champion.coverage * (1 - cfg.coverage_tolerance)
        crit.append(Criterion(f"coverage@{k}", challenger.coverage, champion.coverage,
                              f">= champion x {1 - cfg.coverage_tolerance:.2f}",
                              challenger.coverage >= floor))  # fmt: skip
        if challenger.cold_ranks is not None and champion.cold_ranks is not None:
            if len(challenger.cold_ranks):
                c_new = float(ndcg_per_user(challenger.cold_ranks, k).mean())
                c_old = float(ndcg_per_user(champion.cold_ranks, k).mean())
                crit.append(Criterion(
                    f"cold-start ndcg@{k} (<= {cfg.cold_start_max_events} events)", c_new, c_old,
                    f">= champion - {cfg.cold_start_tolerance}",
                    c_new >= c_old - cfg.cold_start_tolerance,
                    f"{len(challenger.cold_ranks)} users",
                ))  # fmt: skip
        allowed = max(champion.p95_ms * (1 + cfg.latency_tolerance), cfg.latency_floor_ms)
        ceiling = min(allowed, cfg.latency_max_ms)
        crit.append(Criterion("p95 latency ms", challenger.p95_ms, champion.p95_ms,
                              f"<= {ceiling:.2f}", challenger.p95_ms <= ceiling))  # fmt: skip
    if challenger.old_ndcg is not None and champion is not None and champion.old_ndcg is not None:
        crit.append(Criterion(
            f"old-data slice ndcg@{k} (forgetting)", challenger.old_ndcg, champion.old_ndcg,
            f">= champion - {cfg.forgetting_tolerance}",
            challenger.old_ndcg >= champion.old_ndcg - cfg.forgetting_tolerance,
        ))  # fmt: skip
    return crit


def _gain(new: np.ndarray, old: np.ndarray, cfg: GateConfig, policy: str) -> Criterion:
    """The overall NDCG@k gain's bootstrap: clearly positive (full), or non-inferior (fine-tune)."""
    if policy == INCREMENTAL:
        name, margin = "change (non-inferiority)", cfg.incremental_margin
    else:
        name, margin = "improvement", cfg.margin
    return _slice(f"ndcg@{cfg.k} {name}, {cfg.confidence:.0%} lower bound", new, old, cfg, margin)


def _slice_gains(
    new: np.ndarray, old: np.ndarray, cfg: GateConfig, new_data: np.ndarray | None
) -> list[Criterion]:
    """A fine-tune's two slices: better on the new data (evaluation cases whose user or target
    item has events since its parent: what it was trained on), and non-inferior on the old (what
    it must not forget)."""
    k = cfg.k
    name = f"ndcg@{k} gain on new data, {cfg.new_data_confidence:.0%} lower bound"
    rule = f"> margin {cfg.new_data_margin}"
    n = 0 if new_data is None else int(np.count_nonzero(new_data))
    if new_data is None or n < cfg.min_new_users:
        return [Criterion(name, None, None, rule, False,
                          f"{n} cases with new data, fewer than {cfg.min_new_users}")]  # fmt: skip
    mask = np.asarray(new_data, dtype=bool)
    out = [_slice(name, new[mask], old[mask], cfg, cfg.new_data_margin, cfg.new_data_confidence)]
    if np.count_nonzero(~mask):
        # A slice of a few hundred cases: its mean, held to the forgetting guard-rail's tolerance
        # (a 95% bound there is wider than any margin worth holding a fine-tune to).
        out.append(_slice(f"ndcg@{k} change on old data, mean", new[~mask], old[~mask], cfg,
                          -cfg.forgetting_tolerance, 0.5))  # fmt: skip
    return out


def _slice(
    name: str,
    new: np.ndarray,
    old: np.ndarray,
    cfg: GateConfig,
    margin: float,
    confidence: float | None = None,
) -> Criterion:
    """The bootstrap's lower bound of the NDCG gain on one set of users, above ``margin``."""
    conf = cfg.confidence if confidence is None else confidence
    mean, low, high = paired_bootstrap(new, old, cfg.n_boot, conf, cfg.seed)
    return Criterion(
        name, low, 0.0, f"> margin {margin}", low > margin,
        f"mean {mean:+.5f}, bootstrap [{low:+.5f}, {high:+.5f}] over {len(new)} users; "
        f"challenger {new.mean():.4f} vs champion {old.mean():.4f}",
    )  # fmt: skip


def decide(
    challenger: ModelEvidence,
    champion: ModelEvidence | None,
    cfg: GateConfig,
    force: str | None = None,
    block: str | None = None,
    policy: str = FULL,
    new_data: np.ndarray | None = None,
) -> Verdict:
    """The gate under ``policy`` (the challenger's mode: ``full`` or ``incremental``).
    ``force``/``block`` carry an operator's reason and override the criteria (which are still
    computed and recorded)."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
    crit = criteria(challenger, champion, cfg, policy, new_data)
    failed = [c.name for c in crit if not c.passed]

    def verdict(promote: bool, reason: str) -> Verdict:
        return Verdict(promote, reason, crit, policy)

    if block:
        return verdict(False, f"blocked by operator: {block}")
    if force:
        return verdict(True, f"forced by operator: {force}")
    if not challenger.smoke_ok:
        return verdict(False, f"infra validation failed: {challenger.smoke_error}")
    if failed:
        return verdict(False, "rejected: " + "; ".join(failed) + " failed")
    if champion is None:
        return verdict(True, "no champion (missing or broken): challenger passes infra validation")
    return verdict(True, f"all {len(crit)} criteria passed ({policy} policy)")
