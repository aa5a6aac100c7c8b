"""Notices to the people who run the loop: a quarantined partition or another failed task, a
rejected promotion, a rollback. Each is posted as JSON to the webhook in ``RECSYS_ALERT_WEBHOOK``
(Slack's and Mattermost's incoming webhooks show its ``text``); with none set, nothing is sent.
A notice that cannot be delivered is logged, never raised: it must not fail what it reports on."""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

ENV_WEBHOOK = "RECSYS_ALERT_WEBHOOK"
KINDS = ("quarantine", "task_failed", "promotion_rejected", "rollback")


@dataclass(frozen=True)
class Notice:
    kind: str  # one of KINDS
    title: str
    text: str
    fields: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"notice kind must be one of {KINDS}, not {self.kind!r}")

    def payload(self) -> dict[str, object]:
        lines = [f"*{self.title}*", self.text, *(f"{k}: {v}" for k, v in self.fields.items())]
        return {"text": "\n".join(lines), "kind": self.kind, "title": self.title,
                "fields": self.fields}  # fmt: skip


def send(notice: Notice, url: str | None = None, timeout_s: float = 10.0) -> bool:
    """Post ``notice`` to ``url`` (default: ``$RECSYS_ALERT_WEBHOOK``). True when delivered."""
    url = os.environ.get(ENV_WEBHOOK, "") if url is None else url
    if not url:
        return False
    body = json.dumps(notice.payload()).encode()
    try:
        request = urllib.request.Request(
            url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=timeout_s):
            pass
    except (OSError, ValueError) as err:  # unreachable, refused, 4xx/5xx, a malformed URL
        log.warning("could not deliver the %s notice to the webhook: %s", notice.kind, err)
        return False
    return True
