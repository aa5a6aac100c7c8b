"""Training survives being killed, trains with a sampled softmax, and mixes in a replay sample."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import recsys.training.loop as T
from recsys.config import TrainConfig
from recsys.data.splits import leave_last_out, mix_replay
from recsys.evaluation.metrics import evaluate_model, evaluate_popularity
from recsys.model.sasrec import build_model
from recsys.training.loop import train
from recsys.training.losses import sampled_softmax_loss
from tests.helpers.training import MODEL, N_ITEMS, TRAIN, walks

RESUME_CFG = dataclasses.replace(TRAIN, epochs=12, eval_every=2, patience=100)

# A child process that trains with a state file; the test kills it with SIGKILL mid-run.
CHILD = textwrap.dedent(
    """
    import dataclasses, json, sys, time
    import torch
    import recsys.training.loop as T
    from recsys.data.splits import leave_last_out
    from tests.helpers.training import MODEL, N_ITEMS, TRAIN, walks

    torch.set_num_threads(1)
    slow = T._run_epoch
    def run_epoch(*args, **kwargs):  # slow epochs, so the kill lands mid-run
        time.sleep(0.3)
        return slow(*args, **kwargs)
    T._run_epoch = run_epoch
    extra = json.loads(sys.argv[2])
    cfg = dataclasses.replace(TRAIN, epochs=12, eval_every=2, patience=100, **extra)
    T.train(leave_last_out(walks(80, N_ITEMS, seed=3)), N_ITEMS, MODEL, cfg, state_path=sys.argv[1])
    """
)


def _saved_epoch(path) -> int:
    try:
        return int(torch.load(path, weights_only=True)["epoch"])
    except (FileNotFoundError, RuntimeError, EOFError):
        return 0


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic as the child process
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    "extra", [{}, {"ema_halflife_epochs": 1.0, "item_dropout": 0.2}], ids=["plain", "averaged"]
)
def test_killed_training_resumes_where_it_stopped(tmp_path, extra):
    split = leave_last_out(walks(80, N_ITEMS, seed=3))
    cfg = dataclasses.replace(RESUME_CFG, **extra)
    reference = train(split, N_ITEMS, MODEL, cfg)  # never interrupted

    state = tmp_path / "state.pt"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(state), json.dumps(extra)], env=env)
    deadline = time.monotonic() + 120
    while _saved_epoch(state) < 3 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    killed_after = _saved_epoch(state)
    assert 3 <= killed_after < cfg.epochs, "the child must die mid-run"

    resumed = train(split, N_ITEMS, MODEL, cfg, state_path=state)
    assert resumed.resumed_after_epoch == killed_after and reference.resumed_after_epoch == 0
    assert len(resumed.losses) == cfg.epochs  # earlier epochs come from the state file
    assert resumed.losses == pytest.approx(reference.losses, rel=1e-5)
    assert [h["epoch"] for h in resumed.history] == [h["epoch"] for h in reference.history]
    assert resumed.best_epoch == reference.best_epoch
    for key, value in reference.checkpoint.model_state.items():
        torch.testing.assert_close(resumed.checkpoint.model_state[key], value)


def test_finished_state_is_returned_without_training_again(tmp_path, monkeypatch):
    split = leave_last_out(walks(60, N_ITEMS, seed=4))
    cfg = dataclasses.replace(RESUME_CFG, epochs=4)
    first = train(split, N_ITEMS, MODEL, cfg, state_path=tmp_path / "s.pt")

    def no_more_epochs(*args, **kwargs):
        raise AssertionError("a finished training ran another epoch")

    monkeypatch.setattr(T, "_run_epoch", no_more_epochs)
    again = train(split, N_ITEMS, MODEL, cfg, state_path=tmp_path / "s.pt")
    assert again.losses == first.losses and again.best_epoch == first.best_epoch


def test_state_of_other_data_or_config_is_ignored(tmp_path):
    state = tmp_path / "s.pt"
    cfg = dataclasses.replace(RESUME_CFG, epochs=2)
    train(leave_last_out(walks(60, N_ITEMS, seed=4)), N_ITEMS, MODEL, cfg, state_path=state)
    other = train(leave_last_out(walks(60, N_ITEMS, seed=5)), N_ITEMS, MODEL, cfg, state_path=state)
    assert len(other.losses) == 2  # trained from the start, not "already done"
    assert other.resumed_after_epoch == 0
    fresh = train(leave_last_out(walks(60, N_ITEMS, seed=5)), N_ITEMS, MODEL, cfg)
    assert other.losses == pytest.approx(fresh.losses, rel=1e-5)
    torn = tmp_path / "torn.pt"
    torn.write_bytes(b"not a torch file")
    assert len(train(leave_last_out(walks(60, N_ITEMS, seed=5)), N_ITEMS, MODEL, cfg,
                     state_path=torn).losses) == 2  # fmt: skip


def test_sampled_softmax_matches_full_softmax_with_every_item_as_negative():
    torch.manual_seed(0)
    hidden, weight = torch.randn(7, 4), torch.randn(6, 4)  # 5 items + padding row
    targets = torch.tensor([1, 2, 3, 4, 5, 1, 2])
    full = torch.nn.functional.cross_entropy(hidden @ weight[1:].T, targets - 1)
    # With many negatives every item is drawn, duplicates only add log(count) terms:
    # the sampled loss is then >= the full loss, and close to it up to those terms.
    sampled = sampled_softmax_loss(hidden, weight, targets, n_negatives=5000)
    assert sampled >= full
    none_drawn = sampled_softmax_loss(hidden, weight[:2], torch.ones(7, dtype=torch.long), 50)
    assert none_drawn == pytest.approx(0.0, abs=1e-6)  # every negative is the target: masked


def test_the_sampled_loss_leaves_seen_items_out_of_the_negatives():
    gen = torch.Generator().manual_seed(0)
    hidden, weight = torch.randn(6, 4, generator=gen), torch.randn(9, 4, generator=gen)  # 8 items
    targets = torch.tensor([1, 2, 3, 4, 5, 6])
    seen = torch.tensor([[0, 2, 3], [1, 3, 0], [0, 0, 0], [8, 7, 6], [1, 2, 3], [4, 5, 7]])
    torch.manual_seed(1)
    got = sampled_softmax_loss(hidden, weight, targets, 40, seen)
    torch.manual_seed(1)
    negatives = torch.randint(1, 9, (40,))  # the same draw: every item, most of them twice
    drawn_seen = (seen[:, :, None] == negatives[None, None, :]).any(dim=1)  # (M, S)
    masked = drawn_seen | (negatives[None, :] == targets[:, None])
    pos = (hidden * weight[targets]).sum(dim=1, keepdim=True)
    neg = (hidden @ weight[negatives].T).masked_fill(masked, float("-inf"))
    want = torch.nn.functional.cross_entropy(torch.cat([pos, neg], 1), torch.zeros(6).long())
    torch.testing.assert_close(got, want)
    torch.manual_seed(1)
    assert sampled_softmax_loss(hidden, weight, targets, 40).item() > want.item() + 0.1


def test_sampled_softmax_training_learns(tmp_path):
    split = leave_last_out(walks(200, N_ITEMS, seed=1))
    cfg = dataclasses.replace(TRAIN, loss="sampled", n_negatives=16)
    result = train(split, N_ITEMS, MODEL, cfg)
    got = evaluate_model(build_model(result.checkpoint), split, N_ITEMS, k=10)
    pop = evaluate_popularity(split, N_ITEMS, k=10)
    assert got["ndcg_at_10"] > pop["ndcg_at_10"] + 0.2


def test_bad_loss_is_refused():
    split = leave_last_out(walks(20, N_ITEMS, seed=1))
    with pytest.raises(ValueError, match="loss"):
        train(split, N_ITEMS, MODEL, TrainConfig(loss="hinge"))  # type: ignore[arg-type]


def test_mix_replay_is_seeded_sampled_without_replacement_and_capped():
    new = [[1, 2], [3, 4]]
    old = [[10 + i, 20 + i] for i in range(10)]
    a = mix_replay(new, old, ratio=2.0, seed=0)
    assert a[:2] == new and len(a) == 6
    replayed = [tuple(s) for s in a[2:]]
    assert len(set(replayed)) == 4 and set(replayed) <= {tuple(s) for s in old}
    assert mix_replay(new, old, ratio=2.0, seed=0) == a
    assert mix_replay(new, old, ratio=2.0, seed=1) != a
    assert len(mix_replay(new, old, ratio=100.0, seed=0)) == 12  # capped at all of old
    assert mix_replay(new, old, ratio=0.0, seed=0) == new
    with pytest.raises(ValueError, match="ratio"):
        mix_replay(new, old, ratio=-1.0, seed=0)
