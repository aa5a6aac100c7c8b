import pytest

from recsys.config import PromotionPolicy
from recsys.promote import decide

POLICY = PromotionPolicy(metric="ndcg_at_10", margin=0.0)


def test_no_champion_promotes():
    assert decide({"ndcg_at_10": 0.01}, None, POLICY).promote


@pytest.mark.parametrize(
    "new,old,margin,expected",
    [
        (0.12, 0.10, 0.0, True),
        (0.10, 0.10, 0.0, False),  # a tie keeps the champion
        (0.09, 0.10, 0.0, False),
        (0.12, 0.10, 0.05, False),  # better, but not by the margin
    ],
)
def test_challenger_must_beat_champion_by_the_margin(new, old, margin, expected):
    decision = decide({"ndcg_at_10": new}, {"ndcg_at_10": old}, PromotionPolicy(margin=margin))
    assert decision.promote is expected
    assert f"{new:.5f} vs champion's {old:.5f} ({new - old:+.5f}" in decision.reason
    assert decision.reason.startswith("beats" if expected else "does not beat")


def test_missing_metric_is_an_error():
    with pytest.raises(KeyError, match="ndcg_at_10"):
        decide({"hr_at_10": 0.5}, None, POLICY)
