"""SASRec: shapes, causality, padding, catalogue growth, scoring and checkpoints."""

import dataclasses

import numpy as np
import pytest
import torch

from recsys.config import ModelConfig
from recsys.model.sasrec import Checkpoint, Dropout, SASRec, build_model, pad_left, score_contexts

CFG = ModelConfig(max_len=8, d_model=16, n_layers=2, n_heads=2, dropout=0.2)
N_ITEMS = 20


@pytest.fixture()
def model() -> SASRec:
    torch.manual_seed(0)
    return SASRec(N_ITEMS, CFG).eval()


def test_forward_shapes(model):
    seqs = torch.tensor([[0, 0, 1, 2, 3], [4, 5, 6, 7, 8]])
    assert model(seqs).shape == (2, 5, N_ITEMS + 1)
    assert model.hidden(seqs).shape == (2, 5, CFG.d_model)


def test_longer_than_max_len_is_rejected(model):
    with pytest.raises(ValueError, match="max_len"):
        model(torch.ones(1, CFG.max_len + 1, dtype=torch.long))


def test_causal_later_items_do_not_change_earlier_outputs(model):
    seqs = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8]])
    changed = seqs.clone()
    changed[0, 5:] = torch.tensor([11, 12, 13])
    with torch.no_grad():
        a, b = model(seqs), model(changed)
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_padding_does_not_leak_into_outputs(model):
    # The same history, padded to different lengths, gives the same last-position scores.
    with torch.no_grad():
        short = model(torch.tensor([[3, 4, 5]]))[:, -1]
        padded = model(torch.tensor([[0, 0, 0, 0, 0, 3, 4, 5]]))[:, -1]
    torch.testing.assert_close(short, padded)


def test_unpadded_batches_take_plain_causal_attention_with_the_same_outputs(model):
    # A batch without padding skips the explicit mask (is_causal): every position must match
    # the same items behind padding, which go through the mask.
    with torch.no_grad():
        plain = model.hidden(torch.tensor([[3, 4, 5, 6]]))
        masked = model.hidden(torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]]))[:1, 2:]
    torch.testing.assert_close(plain, masked)


@pytest.mark.parametrize("n_layers", [1, 3])
@pytest.mark.parametrize(
    "seqs",
    [
        [[1, 2, 3, 4, 5, 6, 7, 8], [8, 7, 6, 5, 4, 3, 2, 1]],  # no padding
        [[0, 0, 0, 4, 5, 6, 7, 8], [0, 0, 0, 0, 0, 0, 0, 9], [1, 2, 3, 4, 5, 6, 7, 8]],
        [[0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 3, 4, 5]],  # a fully padded row
    ],
)
def test_last_hidden_is_the_last_position_of_hidden(n_layers, seqs):
    torch.manual_seed(1)
    model = SASRec(N_ITEMS, dataclasses.replace(CFG, n_layers=n_layers)).eval()
    batch = torch.tensor(seqs)
    with torch.no_grad():
        full, last = model.hidden(batch)[:, -1], model.last_hidden(batch)
    assert last.shape == (len(seqs), CFG.d_model)
    torch.testing.assert_close(last, full)


@pytest.mark.parametrize("training", [False, True])
def test_fully_padded_rows_are_finite(model, training):
    model.train(training)
    seqs = torch.tensor([[0] * CFG.max_len, [0] * (CFG.max_len - 1) + [4]])
    out = model(seqs)
    assert torch.isfinite(out).all()
    if training:
        out.sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_grow_items_keeps_old_rows_bit_identical(model):
    old = model.item_emb.weight.detach().clone()
    model.grow_items(N_ITEMS + 7)
    new = model.item_emb.weight.detach()
    assert new.shape == (N_ITEMS + 8, CFG.d_model)
    assert model.n_items == N_ITEMS + 7
    assert torch.equal(new[: N_ITEMS + 1], old)
    added = new[N_ITEMS + 1 :]
    assert torch.isfinite(added).all() and added.abs().sum() > 0
    assert 0.5 * old[1:].std() < added.std() < 2 * old[1:].std()  # initialised like the others
    assert model(torch.tensor([[1, N_ITEMS + 7]])).shape == (1, 2, N_ITEMS + 8)


def test_grow_items_refuses_to_shrink(model):
    with pytest.raises(ValueError, match="shrink"):
        model.grow_items(N_ITEMS - 1)


def test_pad_left_truncates_and_drops_unknown_items():
    got = pad_left([[1, 2, 3, 4, 5], [9, 2], []], max_len=3, n_known=5)
    assert got.tolist() == [[3, 4, 5], [0, 0, 2], [0, 0, 0]]


def test_score_contexts_with_a_model_that_knows_fewer_items(model):
    bigger = N_ITEMS + 5
    scores = score_contexts(model, [[1, 2, 3], [1, N_ITEMS + 3, 2, 3], []], bigger)
    assert scores.shape == (3, bigger + 1)
    assert np.isneginf(scores[:, N_ITEMS + 1 :]).all()  # items the model has never seen
    assert np.isneginf(scores[:, 0]).all()  # padding
    assert np.isfinite(scores[:, 1 : N_ITEMS + 1]).all()  # known items, empty context included
    np.testing.assert_allclose(scores[0], scores[1])  # the unknown context item is ignored


def test_score_contexts_matches_forward_and_restores_mode(model):
    model.train()
    scores = score_contexts(model, [[0, 4, 5, 6]], N_ITEMS, batch_size=1)
    assert model.training
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([[0, 0, 0, 0, 0, 4, 5, 6]]))[0, -1].numpy()
    np.testing.assert_allclose(scores[0, 1:], logits[1:], rtol=1e-5, atol=1e-6)


def test_score_contexts_batches_by_length_and_keeps_each_rows_scores(model):
    """Contexts are scored in length-sorted batches cut to their longest context; each row
    must still get its own scores, those of a forward pass over the full ``max_len`` window."""
    rng = np.random.default_rng(0)
    contexts = [rng.integers(1, N_ITEMS + 1, size=n).tolist() for n in (5, 1, 12, 0, 3, 8, 2, 7)]
    scores = score_contexts(model, contexts, N_ITEMS, batch_size=3)  # batches of mixed lengths
    with torch.no_grad():
        full = torch.from_numpy(pad_left(contexts, CFG.max_len, N_ITEMS))  # (8, max_len)
        want = (model(full)[:, -1, 1:]).numpy()  # (8, n_items)
    np.testing.assert_allclose(scores[:, 1:], want, rtol=1e-5, atol=1e-6)
    assert len({tuple(row) for row in want.round(4)}) == len(contexts)  # rows tell apart


def test_checkpoint_roundtrip_gives_identical_scores(model, tmp_path):
    opt = torch.optim.AdamW(model.parameters())
    model.train()
    model(torch.tensor([[1, 2, 3]])).sum().backward()
    opt.step()
    model.eval()
    ckpt = Checkpoint(
        model_state=model.state_dict(),
        model_config=CFG,
        n_items=N_ITEMS,
        train_config={"lr": 1e-3},
        optimizer_state=opt.state_dict(),
        metadata={"item_ids": [f"i{i}" for i in range(N_ITEMS)]},
    )
    ckpt.save(tmp_path / "model.pt")
    loaded = Checkpoint.load(tmp_path / "model.pt")
    assert loaded.model_config == CFG
    assert loaded.metadata["item_ids"][3] == "i3"
    assert loaded.optimizer_state["state"].keys() == opt.state_dict()["state"].keys()
    contexts = [[1, 2, 3], [7], []]
    np.testing.assert_array_equal(
        score_contexts(build_model(loaded), contexts, N_ITEMS),
        score_contexts(model, contexts, N_ITEMS),
    )


def test_build_model_takes_architecture_from_checkpoint():
    cfg = dataclasses.replace(CFG, d_model=8, n_layers=1)
    src = SASRec(5, cfg)
    ckpt = Checkpoint(src.state_dict(), cfg, 5, {})
    built = build_model(ckpt)
    assert built.cfg == cfg and built.n_items == 5 and len(built.blocks) == 1
    assert not built.training


def test_dropout_is_identity_in_eval_and_rescales_in_training():
    torch.manual_seed(0)
    drop = Dropout(0.25)
    x = torch.ones(200, 100)
    assert torch.equal(drop.eval()(x), x)
    y = drop.train()(x)
    assert (y == 0).float().mean().item() == pytest.approx(0.25, abs=0.02)
    assert torch.allclose(y[y != 0], torch.tensor(1 / 0.75))
