"""DDP training in two CPU processes under torchrun: same checkpoint format, same quality."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

from recsys.data.splits import leave_last_out
from recsys.evaluation.metrics import evaluate_model, evaluate_popularity
from recsys.model.sasrec import Checkpoint, build_model
from recsys.training.loop import train
from tests.helpers.training import MODEL, N_ITEMS, TRAIN, walks

TORCHRUN = Path(sys.executable).with_name("torchrun")


def test_two_process_ddp_training_matches_single_process(tmp_path):
    sequences = walks(200, N_ITEMS, seed=1)
    split = leave_last_out(sequences)
    single_cfg = dataclasses.replace(TRAIN, epochs=20)
    # Two processes with half the batch each take the same optimisation steps as one process.
    ddp_cfg = dataclasses.replace(single_cfg, batch_size=single_cfg.batch_size // 2)
    (tmp_path / "seqs.json").write_text(json.dumps({"n_items": N_ITEMS, "sequences": sequences}))
    (tmp_path / "cfg.json").write_text(
        json.dumps({"model": dataclasses.asdict(MODEL), "train": dataclasses.asdict(ddp_cfg)})
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "ddp.pt"
    proc = subprocess.run(
        [str(TORCHRUN), "--standalone", "--nproc-per-node", "2",
         "-m", "recsys.training.distributed",
         "--sequences", str(tmp_path / "seqs.json"), "--config", str(tmp_path / "cfg.json"),
         "--out", str(out)],  # fmt: skip
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["world_size"] == 2 and summary["backend"] == "gloo"

    ddp = Checkpoint.load(out)  # the single-process format
    assert ddp.metadata["world_size"] == 2 and ddp.n_items == N_ITEMS
    assert ddp.model_config == MODEL
    single = train(split, N_ITEMS, MODEL, single_cfg)
    assert single.checkpoint.model_state.keys() == ddp.model_state.keys()

    pop = evaluate_popularity(split, N_ITEMS)["ndcg_at_10"]
    got_ddp = evaluate_model(build_model(ddp), split, N_ITEMS)["ndcg_at_10"]
    got_single = evaluate_model(build_model(single.checkpoint), split, N_ITEMS)["ndcg_at_10"]
    assert got_ddp > pop + 0.2
    assert abs(got_ddp - got_single) < 0.1 * got_single, (got_ddp, got_single)
