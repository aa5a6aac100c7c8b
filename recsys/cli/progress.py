"""How ``recsys train`` shows a training as it runs (on stderr: stdout holds the result): a
progress bar on a terminal, one plain line per epoch anywhere else (logs, CI, pipes)."""

from __future__ import annotations

from typing import Any, TextIO

from recsys.training.progress import EpochReport

BAR = "{l_bar}{bar}| {n_fmt}/{total_fmt} epochs [{elapsed}{postfix}]"


class Lines:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, report: EpochReport) -> None:
        print(report.line(), file=self.stream, flush=True)

    def close(self) -> None:
        pass


class Bar:
    """A tqdm bar over the epochs, with the loss, the latest validation NDCG@10 and an ETA that
    knows the time budget (tqdm's own would assume every epoch runs)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.bar: Any = None

    def __call__(self, report: EpochReport) -> None:
        from tqdm import tqdm

        if self.bar is None:  # a resumed training starts part-way
            self.bar = tqdm(total=report.epochs, initial=report.epoch - 1, file=self.stream,
                            unit="epoch", dynamic_ncols=True, bar_format=BAR)  # fmt: skip
        ndcg = "-" if report.valid_ndcg is None else f"{report.valid_ndcg:.4f}"
        self.bar.set_postfix_str(
            f"loss {report.loss:.4f}, valid NDCG@10 {ndcg}, ETA {report.eta_s:.0f} s", refresh=False
        )
        self.bar.update(report.epoch - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def for_stream(stream: TextIO) -> Bar | Lines:
    return Bar(stream) if stream.isatty() else Lines(stream)
