"""Multi-process training with DDP, started by ``torchrun``; writes the usual ``Checkpoint``.

    torchrun --nproc-per-node 2 -m recsys.training.distributed --out model.pt   # features snapshot
    torchrun --nproc-per-node 2 -m recsys.training.distributed --sequences seqs.json --out model.pt

Each process joins the group (gloo on CPU, nccl when it has a GPU), splits the same
leave-last-out split as ``recsys train`` and calls ``recsys.training.loop.train``, which shares the
batches between processes and all-reduces gradients. Rank 0 writes the checkpoint and a JSON
summary; the checkpoint loads with ``Checkpoint.load`` like a single-process one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

from recsys.config import PipelineConfig, Settings


def _data(args: argparse.Namespace, cfg: PipelineConfig) -> tuple[Any, int, dict[str, Any]]:
    """(split, n_items, metadata) from a sequences file or the current features snapshot."""
    from recsys.data.splits import leave_last_out

    if args.sequences is not None:
        payload = json.loads(Path(args.sequences).read_text())
        sequences, n_items = payload["sequences"], int(payload["n_items"])
        meta: dict[str, Any] = {"source": str(args.sequences)}
    else:
        from recsys.data import features

        fs = features.load(Settings.from_env())
        _, sequences = fs.sequences()
        n_items = fs.n_items
        meta = {"item_ids": fs.item_ids, "features_interval": fs.manifest["interval"]["id"]}
    return leave_last_out(sequences, min_events=cfg.eval.min_events), n_items, meta


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="checkpoint written by rank 0")
    parser.add_argument("--sequences", type=Path, help='JSON {"n_items": N, "sequences": [...]}')
    parser.add_argument("--epochs", type=int, help="override the full-retrain preset's epochs")
    parser.add_argument("--seed", type=int, help="override the preset's seed")
    parser.add_argument("--state", type=Path, help="training state file, to resume a kill")
    parser.add_argument(
        "--config", type=Path, help='JSON {"model": {...}, "train": {...}} overriding the defaults'
    )
    args = parser.parse_args(argv)

    import torch
    import torch.distributed as dist

    from recsys.training.loop import train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s rank%(process)d %(message)s")
    cfg = PipelineConfig()
    if args.config is not None:
        given = json.loads(args.config.read_text())
        unknown = set(given) - {"model", "train"}
        if unknown:
            raise SystemExit(f"--config: unknown sections {sorted(unknown)}")
        cfg = dataclasses.replace(
            cfg,
            model=dataclasses.replace(cfg.model, **given.get("model", {})),
            train=dataclasses.replace(cfg.train, **given.get("train", {})),
        )
    overrides = {k: v for k, v in (("epochs", args.epochs), ("seed", args.seed)) if v is not None}
    train_cfg = dataclasses.replace(cfg.train, **overrides)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl")
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
    try:
        split, n_items, meta = _data(args, cfg)
        result = train(split, n_items, cfg.model, train_cfg, state_path=args.state, device=device)
        summary = {
            "world_size": dist.get_world_size(),
            "backend": dist.get_backend(),
            "best_epoch": result.best_epoch,
            "valid": result.best_valid,
            "seconds": result.seconds,
            "tokens_per_s": result.tokens_per_s,
        }
        if dist.get_rank() == 0:
            result.checkpoint.metadata.update(meta)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            result.checkpoint.save(args.out)
            args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return summary


if __name__ == "__main__":
    main()
