"""A tiny training set-up: a model and config that learn item walks in seconds."""

import numpy as np

from recsys.config import ModelConfig, TrainConfig

N_ITEMS = 60
MODEL = ModelConfig(max_len=20, d_model=32, n_layers=1, n_heads=2, dropout=0.1)
TRAIN = TrainConfig(
    epochs=30, batch_size=64, lr=5e-3, eval_every=5, patience=3, seed=0, min_steps=0,
    warmup_epochs=0,
)  # fmt: skip


def walks(n_users: int, n_items: int, seed: int) -> list[list[int]]:
    """Each user walks item -> item + 1 or + 2 (mod n), with 10% random jumps."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_users):
        cur = int(rng.integers(1, n_items + 1))
        seq = [cur]
        for _ in range(int(rng.integers(15, 31)) - 1):
            if rng.random() < 0.1:
                cur = int(rng.integers(1, n_items + 1))
            else:
                cur = (cur - 1 + int(rng.integers(1, 3))) % n_items + 1
            seq.append(cur)
        out.append(seq)
    return out
