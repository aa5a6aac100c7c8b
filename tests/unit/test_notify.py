"""Notices reach the webhook as JSON that Slack-style hooks show; a failed delivery only logs."""

import logging

import pytest

from recsys.release import notify
from tests.helpers.webhook import webhook

NOTICE = notify.Notice("rollback", "champion rolled back from v3 to v2", "CTR fell", {"who": "x"})


def test_a_notice_is_posted_as_json_with_a_text(monkeypatch):
    received = []
    with webhook(received) as url:
        monkeypatch.setenv(notify.ENV_WEBHOOK, url)
        assert notify.send(NOTICE) is True
    (body,) = received
    assert body["kind"] == "rollback" and body["fields"] == {"who": "x"}
    assert body["text"] == "*champion rolled back from v3 to v2*\nCTR fell\nwho: x"


def test_without_a_webhook_nothing_is_sent(monkeypatch):
    monkeypatch.delenv(notify.ENV_WEBHOOK, raising=False)
    assert notify.send(NOTICE) is False


@pytest.mark.parametrize("where", ["refused", "http://127.0.0.1:9/hook", "not a url"])
def test_an_undeliverable_notice_is_logged_not_raised(where, caplog):
    received = []
    with webhook(received, status=500) as url, caplog.at_level(logging.WARNING):
        assert notify.send(NOTICE, url if where == "refused" else where, timeout_s=2) is False
    assert "could not deliver the rollback notice" in caplog.text


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="kind"):
        notify.Notice("party", "t", "x")
