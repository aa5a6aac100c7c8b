"""``recsys train``'s progress: a bar on a terminal, plain lines elsewhere, both on stderr."""

import io
import re

from recsys.cli import progress
from recsys.training.progress import EpochReport


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _reports():
    return [
        EpochReport(1, 4, 7.5, None, 2.0, 600.0),
        EpochReport(2, 4, 6.25, 0.0812, 4.0, 600.0),
        EpochReport(3, 4, 5.0, 0.0812, 6.0, 7.0),  # the time budget ends first
    ]


def test_off_a_terminal_each_epoch_is_one_plain_line():
    out = io.StringIO()
    shown = progress.for_stream(out)
    assert isinstance(shown, progress.Lines)
    for report in _reports():
        shown(report)
    shown.close()
    assert out.getvalue().splitlines() == [
        "epoch 1/4  loss 7.5000  valid NDCG@10 -  2 s, about 6 s left",
        "epoch 2/4  loss 6.2500  valid NDCG@10 0.0812  4 s, about 4 s left",
        "epoch 3/4  loss 5.0000  valid NDCG@10 0.0812  6 s, about 1 s left",  # budget: 7 s
    ]


def test_on_a_terminal_a_bar_over_the_epochs():
    out = Terminal()
    shown = progress.for_stream(out)
    assert isinstance(shown, progress.Bar)
    for report in _reports():
        shown(report)
    shown.close()
    last = re.split(r"[\r\n]", out.getvalue().strip())[-1]
    assert "3/4 epochs" in last and "loss 5.0000" in last and "valid NDCG@10 0.0812" in last
    assert "ETA 1 s" in last
    assert "\r" in out.getvalue() and out.getvalue().count("\n") == 1  # one line, redrawn
