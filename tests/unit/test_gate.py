"""The promotion gate on hand-built evidence: it promotes only a clearly better, safe model."""

import dataclasses

import numpy as np
import pytest

from recsys.release.gate import GateConfig, ModelEvidence, decide, ndcg_per_user, paired_bootstrap

CFG = GateConfig(n_boot=500)
N = 400


def evidence(ranks, **kw) -> ModelEvidence:
    base = dict(coverage=0.30, p95_ms=5.0, cold_ranks=np.asarray(ranks[:50]), old_ndcg=None)
    base.update(kw)
    return ModelEvidence(ranks=np.asarray(ranks), **base)


@pytest.fixture
def champion() -> ModelEvidence:
    rng = np.random.default_rng(0)
    return evidence(rng.integers(0, 40, size=N))  # about a quarter of targets in the top 10


def better_than(champ: ModelEvidence, share: float, seed: int = 1) -> np.ndarray:
    """Champion ranks with ``share`` of the users moved to rank 0."""
    ranks = champ.ranks.copy()
    rng = np.random.default_rng(seed)
    ranks[rng.random(N) < share] = 0
    return ranks


def test_ndcg_per_user_matches_the_definition():
    got = ndcg_per_user(np.array([0, 1, 9, 10, 500]), k=10)
    assert got.tolist() == pytest.approx([1.0, 1 / np.log2(3), 1 / np.log2(11), 0.0, 0.0])


def test_bootstrap_is_seeded_deterministic_and_brackets_the_mean():
    rng = np.random.default_rng(3)
    a, b = rng.random(300), rng.random(300)
    first = paired_bootstrap(a, b, 500, 0.95, seed=7)
    assert paired_bootstrap(a, b, 500, 0.95, seed=7) == first
    assert paired_bootstrap(a, b, 500, 0.95, seed=8) != first
    mean, low, high = first
    assert mean == pytest.approx(float((a - b).mean()))
    assert low < mean < high
    same = paired_bootstrap(a, a, 200, 0.95, seed=0)
    assert same == (0.0, 0.0, 0.0)  # no difference, no spread
    with pytest.raises(ValueError):
        paired_bootstrap(a, b[:10], 200, 0.95, seed=0)


def test_bootstrap_over_groups_resamples_whole_groups():
    rng = np.random.default_rng(5)
    a, b = rng.random(300), rng.random(300)
    # One group per case is the plain bootstrap, draw for draw.
    assert paired_bootstrap(a, b, 300, 0.95, 1, groups=np.arange(300) * 7) == paired_bootstrap(
        a, b, 300, 0.95, 1
    )
    # 10 users with 30 events each, every event of a user with the same difference: there are
    # only 10 independent cases, and the interval must be as wide as for 10 cases, not 300.
    per_user = rng.normal(0.05, 0.1, size=10)
    diff, users = np.repeat(per_user, 30), np.repeat(np.arange(10), 30)
    zeros = np.zeros_like(diff)
    mean, low, high = paired_bootstrap(diff, zeros, 2000, 0.95, 0, groups=users)
    assert mean == pytest.approx(per_user.mean())
    _, ten_low, ten_high = paired_bootstrap(per_user, np.zeros(10), 2000, 0.95, 0)
    assert high - low == pytest.approx(ten_high - ten_low, rel=0.15)
    _, naive_low, naive_high = paired_bootstrap(diff, zeros, 2000, 0.95, 0)
    assert naive_high - naive_low < (high - low) / 3
    with pytest.raises(ValueError, match="group labels"):
        paired_bootstrap(a, b, 100, 0.95, 0, groups=np.arange(10))


def test_clearly_better_model_is_promoted(champion):
    challenger = evidence(better_than(champion, 0.3))
    verdict = decide(challenger, champion, CFG)
    assert verdict.promote, verdict.reason
    assert all(c.passed for c in verdict.criteria)
    assert "| ndcg@10 improvement" in verdict.table()


def test_worse_and_tied_models_are_rejected(champion):
    worse = evidence(champion.ranks + 15)
    assert not decide(worse, champion, CFG).promote
    tied = decide(evidence(champion.ranks.copy()), champion, CFG)
    assert not tied.promote and "ndcg@10 improvement" in tied.reason
    # A tiny improvement on a few users is not significant at the default margin.
    slightly = champion.ranks.copy()
    slightly[:2] = 0
    assert not decide(evidence(slightly), champion, CFG).promote


@pytest.mark.parametrize(
    "change,criterion",
    [
        (dict(coverage=0.10), "coverage@10"),
        (dict(p95_ms=40.0), "p95 latency ms"),  # over champion x 1.5 and over the floor
        (dict(p95_ms=60.0), "p95 latency ms"),  # also over the absolute ceiling
        (dict(cold_ranks=np.full(50, 100)), "cold-start"),
        (dict(old_ndcg=0.05), "forgetting"),
    ],
)
def test_a_broken_guard_rail_rejects_an_otherwise_better_model(champion, change, criterion):
    champ = dataclasses.replace(champion, old_ndcg=0.10)
    good = evidence(better_than(champion, 0.3), old_ndcg=0.10)
    assert decide(good, champ, CFG).promote
    verdict = decide(dataclasses.replace(good, **change), champ, CFG)
    assert not verdict.promote
    assert criterion in verdict.reason
    assert [c.name for c in verdict.criteria if not c.passed] == [
        c.name for c in verdict.criteria if criterion in c.name
    ]


def test_latency_differences_under_the_floor_are_noise(champion):
    fast = dataclasses.replace(champion, p95_ms=1.0)
    good = evidence(better_than(champion, 0.3), p95_ms=4.0)  # 4x slower, but under 5 ms
    assert decide(good, fast, CFG).promote
    slow = dataclasses.replace(good, p95_ms=6.0)
    assert "latency" in decide(slow, fast, CFG).reason


def test_hr_guard_rail(champion):
    # NDCG up (many users move to rank 0) but HR down (many hits pushed out of the top 10).
    ranks = champion.ranks.copy()
    hits = np.flatnonzero(ranks < 10)
    ranks[hits[: len(hits) // 2]] = 0
    ranks[hits[len(hits) // 2 :]] = 20
    verdict = decide(evidence(ranks), champion, dataclasses.replace(CFG, margin=-1.0))
    assert not verdict.promote and "hr@10" in verdict.reason


def test_missing_champion_promotes_a_loadable_model_and_never_a_broken_one():
    ranks = np.arange(N) % 50
    assert decide(evidence(ranks), None, CFG).promote
    broken = evidence(ranks, smoke_ok=False, smoke_error="KeyError: item_ids")
    verdict = decide(broken, None, CFG)
    assert not verdict.promote and "item_ids" in verdict.reason


def test_force_and_block_override_with_their_reason(champion):
    worse = evidence(champion.ranks + 15)
    forced = decide(worse, champion, CFG, force="hotfix for INC-42")
    assert forced.promote and "INC-42" in forced.reason
    assert any(not c.passed for c in forced.criteria)  # still computed and recorded
    better = evidence(better_than(champion, 0.3))
    blocked = decide(better, champion, CFG, block="freeze during sale")
    assert not blocked.promote and "freeze during sale" in blocked.reason


def test_config_file_loads_and_rejects_unknown_or_invalid_keys(tmp_path):
    shipped = GateConfig.load()
    assert shipped == GateConfig()  # the file documents the defaults
    bad = tmp_path / "p.toml"
    bad.write_text("[gate]\nmargn = 0.1\n")
    with pytest.raises(ValueError, match="margn"):
        GateConfig.load(bad)
    bad.write_text("[gate]\nconfidence = 1.5\n")
    with pytest.raises(ValueError, match="invalid"):
        GateConfig.load(bad)
    good = tmp_path / "g.toml"
    good.write_text("[gate]\nmargin = 0.002\n")
    assert GateConfig.load(good).margin == 0.002


def new_data_mask(share: float = 0.3, seed: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).random(N) < share


def test_a_fine_tune_better_on_its_new_data_and_even_elsewhere_is_promoted(champion):
    mask = new_data_mask()
    ranks = champion.ranks.copy()
    ranks[mask & (np.random.default_rng(2).random(N) < 0.15)] = 0  # better on the new data only
    tuned = evidence(ranks)
    # The full policy wants a clear overall gain, which a gain on 30% of the users may not give.
    full = decide(tuned, champion, dataclasses.replace(CFG, margin=0.05))
    assert not full.promote and full.policy == "full"
    verdict = decide(tuned, champion, CFG, policy="incremental", new_data=mask)
    assert verdict.promote, verdict.reason
    names = [c.name for c in verdict.criteria]
    assert "ndcg@10 change (non-inferiority), 95% lower bound" in names
    assert "ndcg@10 gain on new data, 50% lower bound" in names
    assert "ndcg@10 change on old data, mean" in names
    assert "incremental" in verdict.table() and "(incremental policy)" in verdict.reason


def test_a_fine_tune_is_rejected_when_it_forgets_or_learns_nothing_new(champion):
    mask = new_data_mask()
    # Better on the new data, much worse on the old users: it forgot.
    forgot = champion.ranks.copy()
    forgot[mask] = 0
    forgot[~mask] += 30
    verdict = decide(evidence(forgot), champion, CFG, policy="incremental", new_data=mask)
    assert not verdict.promote
    assert [c.name for c in verdict.criteria if not c.passed][-1].startswith(
        "ndcg@10 change on old data"
    ), verdict.reason
    # Equal everywhere: non-inferior, but not better on the new data.
    same = decide(evidence(champion.ranks.copy()), champion, CFG, policy="incremental",
                  new_data=mask)  # fmt: skip
    assert not same.promote and "gain on new data" in same.reason
    # Too few users with new data to show anything: rejected, and the table says why.
    few = np.zeros(N, dtype=bool)
    few[: CFG.min_new_users - 1] = True
    better = evidence(better_than(champion, 0.3))
    short = decide(better, champion, CFG, policy="incremental", new_data=few)
    assert not short.promote
    assert "fewer than 10" in [c.note for c in short.criteria if not c.passed][0]


def test_a_fine_tune_slightly_worse_on_old_data_passes_only_within_the_tolerance(champion):
    mask = new_data_mask()
    ranks = champion.ranks.copy()
    ranks[mask & (champion.ranks > 0)] = 0  # every new-data user now at rank 0
    old_user = np.flatnonzero(~mask & (champion.ranks == 9))[0]
    ranks[old_user] = 10  # one old-data hit at rank 9 lost: a small change, within the margin
    tuned = evidence(ranks)
    assert decide(tuned, champion, CFG, policy="incremental", new_data=mask).promote
    strict = dataclasses.replace(CFG, forgetting_tolerance=0.0)  # no drop at all on old data
    verdict = decide(tuned, champion, strict, policy="incremental", new_data=mask)
    assert not verdict.promote and "change on old data" in verdict.reason
    demanding = dataclasses.replace(CFG, incremental_margin=0.5)  # overall: the other criterion
    verdict = decide(tuned, champion, demanding, policy="incremental", new_data=mask)
    assert not verdict.promote and "non-inferiority" in verdict.reason
    with pytest.raises(ValueError, match="policy"):
        decide(tuned, champion, CFG, policy="weekly")
