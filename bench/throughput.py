"""Training throughput benchmark: tokens/s of ``recsys.training.loop.train`` against a plain loop.

    .venv/bin/python bench/throughput.py --no-mlflow                  # CPU, MovieLens-100K
    python bench/throughput.py --device cuda --batch-sizes 64 256     # on a GPU
    python bench/throughput.py --device cuda --data long              # every window full

A token is a training target: one next-item prediction from a real item (padding excluded), so
the figure does not depend on how much padding a loop computes on. Each row trains the shipped
``ModelConfig`` (max length 200 by default) for ``--epochs`` epochs of the same data and reports
targets per second of optimisation (validation excluded); the ratio is against the reference row
of the same batch size, measured in the same run:

    reference        a straightforward loop: every window padded to max length, bf16 autocast on
                     a GPU, ``F.cross_entropy`` over the real targets' logits, AdamW, loss read
                     back every step (what a first implementation does)
    train            ``train()`` with the shipped defaults (fp32)
    train bf16       ``train()`` with ``TrainConfig(precision="bf16")``
    train compiled   ``train()`` with ``TrainConfig(compile=True)``
    (``--rows`` also offers "train compiled bf16")

Every ``train()`` row is measured on a second call: the first call of each row warms up (CUDA
context, cuBLAS, autotuning and, for the compiled row, compilation); its wall time is printed as
"warm-up s". ``--data ml100k`` is MovieLens-100K from the recbole wheel (cached in ``--cache``);
``--data long`` is ``--long-users`` synthetic users of 250 to 400 events each, so every training
window has the full max length. Results are logged to the MLflow experiment ``bench-throughput``
unless ``--no-mlflow``; ``--json`` also writes them to a file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import device_label

from recsys.config import ModelConfig, TrainConfig
from recsys.data.splits import Split, leave_last_out

VARIANTS: dict[str, dict[str, Any]] = {  # train() rows: TrainConfig overrides
    "train": {},
    "train bf16": {"precision": "bf16"},
    "train compiled": {"compile": True},
    "train compiled bf16": {"compile": True, "precision": "bf16"},
}
DEFAULT_ROWS = ["train", "train bf16", "train compiled"]


def long_sequences(n_users: int, n_items: int, seed: int = 0) -> tuple[list[list[int]], int]:
    """(sequences, n_items): ``n_users`` random walks of 250 to 400 items along a ring of
    ``n_items`` items (next item 1 to 3 steps on, 10% random jumps)."""
    rng = np.random.default_rng(seed)
    seqs = []
    for length in rng.integers(250, 401, size=n_users):
        steps = rng.integers(1, 4, size=length)
        jumps = rng.random(length) < 0.1
        steps[jumps] = rng.integers(0, n_items, size=int(jumps.sum()))
        seqs.append(((rng.integers(0, n_items) + np.cumsum(steps)) % n_items + 1).tolist())
    return seqs, n_items


def reference_tokens_per_s(
    split: Split, n_items: int, model_cfg: ModelConfig, cfg: TrainConfig, device: str
) -> float:
    """Targets per second of the plain loop described in the module docstring."""
    import torch

    from recsys.model.sasrec import SASRec
    from recsys.training.windows import build_windows

    torch.manual_seed(cfg.seed)
    dev = torch.device(device)
    model = SASRec(n_items, model_cfg).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    data = build_windows(split.train, model_cfg.max_len)  # (N, max_len + 1)
    gen = torch.Generator().manual_seed(cfg.seed)
    bf16 = dev.type == "cuda"
    tokens, seconds = 0, 0.0
    for _ in range(cfg.epochs):
        model.train()
        t0 = time.perf_counter()
        for idx in torch.randperm(len(data), generator=gen).split(cfg.batch_size):
            batch = data[idx].to(dev)
            x, y = batch[:, :-1], batch[:, 1:]
            sel = (x != 0) & (y != 0)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(x)  # (B, T, V)
                loss = torch.nn.functional.cross_entropy(logits[sel].float(), y[sel])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            loss.item()  # what a loop that logs its loss does
            tokens += int(sel.sum())
        if dev.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - t0
    return tokens / seconds


def train_tokens_per_s(
    split: Split, n_items: int, model_cfg: ModelConfig, cfg: TrainConfig, device: str
) -> tuple[float, float]:
    """(warm-up wall seconds, tokens/s of the second call) of ``train()`` with ``cfg``."""
    from recsys.training.loop import train

    t0 = time.perf_counter()
    train(split, n_items, model_cfg, dataclasses.replace(cfg, epochs=1), device=device)
    warm = time.perf_counter() - t0
    return warm, train(split, n_items, model_cfg, cfg, device=device).tokens_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("ml100k", "long"), default="ml100k")
    parser.add_argument("--long-users", type=int, default=4000)
    parser.add_argument("--long-items", type=int, default=5000)
    parser.add_argument("--device", default=None, help="default: cuda if any, else cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[TrainConfig().batch_size])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per measured row")
    parser.add_argument("--max-len", type=int, default=ModelConfig().max_len)
    parser.add_argument(
        "--rows", nargs="+", choices=list(VARIANTS), default=DEFAULT_ROWS, help="train() rows"
    )
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "recsys-bench")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument("--no-mlflow", action="store_true", help="print only, log nothing")
    args = parser.parse_args()

    import torch

    from recsys.training.loop import resolve_device

    device = str(resolve_device(args.device or "auto"))
    if args.data == "long":
        seqs, n_items = long_sequences(args.long_users, args.long_items)
    else:
        from quality import ml100k_sequences

        seqs, n_items = ml100k_sequences(args.cache)
    split = leave_last_out(seqs, min_events=3)
    model_cfg = ModelConfig(max_len=args.max_len)
    where = device_label(device)
    print(
        f"{args.data}: {len(seqs)} users, {n_items} items, {sum(map(len, seqs))} events; "
        f"max_len {args.max_len}, d_model {model_cfg.d_model}, {model_cfg.n_layers} layers, "
        f"{args.epochs} epochs per row\ntorch {torch.__version__}, {where}, "
        f"{torch.get_num_threads()} threads"
    )
    variants = {k: v for k, v in VARIANTS.items() if k in args.rows}
    print(f"{'row':<16}{'batch':>7}{'tokens/s':>12}{'x reference':>13}{'warm-up s':>11}")
    rows: list[dict[str, Any]] = []
    for batch_size in args.batch_sizes:
        cfg = TrainConfig(
            epochs=args.epochs, batch_size=batch_size, eval_every=args.epochs, min_steps=0,
            max_seconds=1e9,
        )  # fmt: skip
        ref = reference_tokens_per_s(split, n_items, model_cfg, cfg, device)
        rows.append({"row": "reference", "batch": batch_size, "tokens_per_s": ref, "ratio": 1.0})
        print(f"{'reference':<16}{batch_size:>7}{ref:>12.0f}{1.0:>13.2f}", flush=True)
        for name, overrides in variants.items():
            try:
                warm, speed = train_tokens_per_s(
                    split, n_items, model_cfg, dataclasses.replace(cfg, **overrides), device
                )
            except Exception as err:  # e.g. no compiler for torch.compile: say so, go on
                print(f"{name:<16}{batch_size:>7}  failed: {type(err).__name__}: {err}"[:300])
                continue
            rows.append({"row": name, "batch": batch_size, "tokens_per_s": speed,
                         "ratio": speed / ref, "warmup_s": warm})  # fmt: skip
            print(f"{name:<16}{batch_size:>7}{speed:>12.0f}{speed / ref:>13.2f}{warm:>11.1f}",
                  flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"device": where, "data": args.data, "rows": rows}))
    if not args.no_mlflow:
        from common import log_benchmark

        params = {
            "data": args.data, "device": where, "torch": torch.__version__,
            "epochs": args.epochs, "batch_sizes": args.batch_sizes,
            **{f"model.{k}": v for k, v in dataclasses.asdict(model_cfg).items()},
        }  # fmt: skip
        metrics = {
            f"{r['row'].replace(' ', '_')}.b{r['batch']}.tokens_per_s": r["tokens_per_s"]
            for r in rows
        }
        run_id = log_benchmark("throughput", params, metrics, {"throughput": rows})
        print(f"logged to MLflow experiment bench-throughput, run {run_id}")


if __name__ == "__main__":
    main()
