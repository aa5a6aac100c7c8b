"""Automatic rollback on a simulated click-through drop, against a real registry and alias log."""

import datetime as dt

import pytest

from recsys.config import CHAMPION
from recsys.data import events
from recsys.data.impressions import Impression, ImpressionLog
from recsys.registry import aliases
from recsys.registry.alias_log import AliasLog
from recsys.release import notify
from recsys.release.online_guard import OnlineGuardConfig, check, ctr_dropped
from tests.helpers.events import vouched
from tests.helpers.registry import tiny_versions
from tests.helpers.webhook import webhook

CFG = OnlineGuardConfig(min_impressions=100)


def stats(version, impressions, clicked):
    return {"model_version": version, "impressions": impressions, "clicked": clicked}


def test_ctr_drop_rule():
    assert ctr_dropped(stats("2", 1000, 50), stats("1", 1000, 100), CFG)[0]  # 10% -> 5%
    small = ctr_dropped(stats("2", 1000, 95), stats("1", 1000, 100), CFG)
    assert not small[0] and "+5.0% drop" in small[1]  # under the 10% limit
    noisy = ctr_dropped(stats("2", 100, 5), stats("1", 100, 8), CFG)
    assert not noisy[0] and "z=" in noisy[1]  # a 37% drop, but not significant on 100 lists
    assert "too few" in ctr_dropped(stats("2", 50, 0), stats("1", 1000, 100), CFG)[1]
    assert not ctr_dropped(None, stats("1", 1000, 100), CFG)[0]
    assert not ctr_dropped(stats("2", 1000, 0), stats("1", 1000, 0), CFG)[0]


def serve(settings, version, n, clicked, at):
    """``n`` lists served by ``version`` at ``at``; the first ``clicked`` of them get a click."""
    store = events.EventStore(settings.event_store_url)
    shown = [Impression(f"{version}-{i}", f"u{i}", version, ("a", "b"), at) for i in range(n)]
    ImpressionLog(store.engine).write(shown)
    clicks = [
        {"user_id": f"u{i}", "item_id": "a", "event_type": "click", "request_id": f"{version}-{i}",
         "event_time": at.isoformat(), "ingested_at": at + dt.timedelta(seconds=5)}
        for i in range(clicked)
    ]  # fmt: skip
    store.append(vouched(clicks))


@pytest.mark.parametrize("live_clicks,rolls_back", [(20, True), (100, False)])
def test_clear_ctr_drop_rolls_champion_back(
    backend_settings, tmp_path, live_clicks, rolls_back, monkeypatch
):
    settings = backend_settings
    notices = []
    with webhook(notices) as url:
        monkeypatch.setenv(notify.ENV_WEBHOOK, url)
        _drill(settings, tmp_path, live_clicks, rolls_back)
    if rolls_back:  # people hear of it: one notice, for the one rollback
        (notice,) = notices
        assert notice["kind"] == "rollback" and "from v2 to v1" in notice["title"]
        assert "\nCTR of v2 0.0400" in notice["text"] and notice["fields"]["who"]
    else:
        assert notices == []


def _drill(settings, tmp_path, live_clicks, rolls_back):
    reg = tiny_versions(settings, tmp_path, 2)
    log = AliasLog(settings.event_store_url)
    aliases.move_alias(reg, log, CHAMPION, "1", "test", "first champion")
    v1_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    serve(settings, "1", 500, 100, v1_at)  # 20% CTR
    aliases.move_alias(reg, log, CHAMPION, "2", "test", "won the offline gate")
    v2_at = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(seconds=1)
    serve(settings, "2", 500, live_clicks, v2_at)  # 4% or 20%

    result = check(settings, now=v2_at + dt.timedelta(minutes=1), cfg=CFG)
    assert result["live_ctr"]["impressions"] == result["previous_ctr"]["impressions"] == 500
    assert result["rolled_back"] is rolls_back, result["reason"]
    champion = str(reg.alias(CHAMPION).version)
    assert champion == ("1" if rolls_back else "2")
    if rolls_back:
        move = log.head(CHAMPION)
        assert move.kind == "rollback" and move.to_version == "1"
        assert move.reason.startswith("automatic rollback: CTR of v2 0.0400")
        # Said once: the next check has no earlier champion to compare with.
        assert not check(settings, now=v2_at + dt.timedelta(minutes=2), cfg=CFG)["rolled_back"]


def test_config_file_has_the_online_table():
    assert OnlineGuardConfig.load() == OnlineGuardConfig()
