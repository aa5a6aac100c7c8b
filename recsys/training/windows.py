"""Training windows and their batches: how sequences become ``(B, T)`` tensors of a step."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

LENGTH_BUCKET = 8  # windows whose lengths fall in the same bucket of 8 are batched together


def build_windows(sequences: Sequence[Sequence[int]], max_len: int) -> torch.Tensor:
    """Cut each sequence into left-padded windows ``(N, max_len + 1)``.

    Windows are taken from the end backwards and overlap by one item, so every item but a user's
    first is a training target exactly once per epoch; sequences shorter than 2 are skipped.
    """
    width = max_len + 1
    windows: list[np.ndarray] = []
    for seq in sequences:
        arr = np.asarray(seq, dtype=np.int64)
        end = len(arr)
        while end >= 2:
            start = max(0, end - width)
            windows.append(arr[start:end])
            end = start + 1  # the next window ends with this one's first item, an input only here
    out = np.zeros((len(windows), width), dtype=np.int64)
    for row, win in enumerate(windows):
        out[row, width - len(win) :] = win
    return torch.from_numpy(out)


def length_batches(
    lengths: torch.Tensor, batch_size: int, gen: torch.Generator
) -> list[torch.Tensor]:
    """Seeded random batches of window indices, each from windows of similar length.

    Windows are shuffled, stably grouped by length bucket and cut into batches, and the batches
    are shuffled again: batches stay random but carry little padding to compute on.
    """
    order = torch.randperm(len(lengths), generator=gen)  # (N,)
    buckets = torch.div(lengths[order], LENGTH_BUCKET, rounding_mode="floor")
    order = order[torch.argsort(buckets, stable=True)]
    batches = list(order.split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


def drop_items(x: torch.Tensor, p: float) -> torch.Tensor:
    """``x`` ``(B, T)`` with each item but the last column's turned to padding with probability
    ``p`` (torch's global RNG): later positions no longer attend to it. The targets are unchanged,
    so every position still predicts its next item, from less context."""
    drop = (torch.rand(x.shape, device=x.device) < p) & (x != 0)  # (B, T)
    drop[:, -1] = False
    return x.masked_fill(drop, 0)
