"""Training on a tiny synthetic sequential dataset: it learns, warm-starts and is reproducible."""

import dataclasses

import numpy as np
import pytest
import torch

from recsys.config import TrainConfig
from recsys.data.splits import leave_last_out
from recsys.evaluation.metrics import evaluate_model, evaluate_popularity
from recsys.model.sasrec import SASRec, build_model, score_contexts
from recsys.training.loop import train
from recsys.training.losses import SoftmaxCrossEntropy, dense_loss_sum, seen_items
from recsys.training.optim import WeightAverage, init_model
from recsys.training.windows import build_windows, drop_items
from tests.helpers.training import MODEL, N_ITEMS, TRAIN, walks


@pytest.fixture(scope="module")
def split():
    return leave_last_out(walks(200, N_ITEMS, seed=1))


@pytest.fixture(scope="module")
def trained(split):
    return train(split, N_ITEMS, MODEL, TRAIN)


def test_build_windows_cover_every_target_once():
    got = build_windows([[1, 2, 3, 4, 5, 6], [7, 8], [9]], max_len=3)
    assert got.tolist() == [[3, 4, 5, 6], [0, 1, 2, 3], [0, 0, 7, 8]]


def test_loss_drops_and_model_beats_popularity(trained, split):
    assert trained.losses[-1] < 0.8 * trained.losses[0]
    model = build_model(trained.checkpoint)
    got = evaluate_model(model, split, N_ITEMS, k=10, on="test")
    pop = evaluate_popularity(split, N_ITEMS, k=10, on="test")
    assert got["n_users"] == pop["n_users"] == 200
    assert got["ndcg_at_10"] > pop["ndcg_at_10"] + 0.2


def test_selection_is_on_validation(trained):
    checks = {row["epoch"]: row["ndcg_at_10"] for row in trained.history}
    assert trained.best_epoch in checks
    assert trained.best_valid["ndcg_at_10"] == max(checks.values())
    assert all("test" not in key for row in trained.history for key in row)
    ckpt = trained.checkpoint
    assert ckpt.optimizer_state is not None and ckpt.train_config["lr"] == TRAIN.lr
    assert trained.tokens_per_s > 0 and trained.seconds > 0


def test_tokens_count_every_target_of_every_epoch(trained, split):
    data = build_windows(split.train, MODEL.max_len)
    per_epoch = int(((data[:, :-1] != 0) & (data[:, 1:] != 0)).sum())
    assert per_epoch > 0
    assert trained.tokens == len(trained.losses) * per_epoch


def test_returned_checkpoint_is_the_best_state(trained, split):
    model = build_model(trained.checkpoint)
    again = evaluate_model(model, split, N_ITEMS, on="valid")
    assert again["ndcg_at_10"] == pytest.approx(trained.best_valid["ndcg_at_10"])


def test_training_is_deterministic(split):
    cfg = dataclasses.replace(TRAIN, epochs=3, eval_every=1)
    a = train(split, N_ITEMS, MODEL, cfg)
    b = train(split, N_ITEMS, MODEL, cfg)
    c = train(split, N_ITEMS, MODEL, dataclasses.replace(cfg, seed=1))
    assert a.losses == b.losses
    assert a.losses != c.losses
    for key, value in a.checkpoint.model_state.items():
        assert torch.equal(value, b.checkpoint.model_state[key]), key


def test_incremental_warm_starts_and_grows_the_catalogue(trained):
    ckpt = trained.checkpoint
    grown = N_ITEMS + 10
    # Before any training step the warm-started model scores old items exactly like the init.
    ignored = dataclasses.replace(MODEL, d_model=8, n_layers=3)
    start = init_model(grown, ignored, init=ckpt)
    assert start.cfg == ckpt.model_config and start.n_items == grown
    contexts = [[1, 2, 3], [10, 11, 12, 13], []]
    before = score_contexts(build_model(ckpt), contexts, grown)
    after = score_contexts(start, contexts, grown)
    np.testing.assert_array_equal(after[:, : N_ITEMS + 1], before[:, : N_ITEMS + 1])
    assert np.isneginf(before[:, N_ITEMS + 1 :]).all() and np.isfinite(after[:, 1:]).all()

    # Fine-tune on new walks over the larger catalogue.
    new_split = leave_last_out(walks(120, grown, seed=2))
    result = train(new_split, grown, ignored, TrainConfig.finetune(lr=3e-3, epochs=6, seed=0),
                   init=ckpt)  # fmt: skip
    assert result.checkpoint.n_items == grown
    assert result.checkpoint.model_config == ckpt.model_config
    assert result.losses[-1] < result.losses[0]
    # AdamW moments are carried over (padded for the new rows) with the fine-tune's learning rate.
    old_state, new_state = ckpt.optimizer_state, result.checkpoint.optimizer_state
    assert new_state["state"][0]["step"] > old_state["state"][0]["step"]
    assert new_state["state"][0]["exp_avg"].shape == (grown + 1, MODEL.d_model)
    assert {group["lr"] for group in new_state["param_groups"]} == {3e-3}
    tuned = build_model(result.checkpoint)
    got = evaluate_model(tuned, new_split, grown, on="test")
    pop = evaluate_popularity(new_split, grown, on="test")
    assert got["ndcg_at_10"] > pop["ndcg_at_10"] + 0.1


def test_warm_shrink_scales_old_weights_only(trained):
    ckpt = trained.checkpoint
    grown = N_ITEMS + 5
    torch.manual_seed(7)
    plain = init_model(grown, MODEL, init=ckpt)
    torch.manual_seed(7)
    shrunk = init_model(grown, MODEL, init=ckpt, shrink=0.25)
    old_rows = N_ITEMS + 1
    params = dict(shrunk.named_parameters())
    for name, value in ckpt.model_state.items():
        got = params[name].detach()
        if name == "item_emb.weight":
            torch.testing.assert_close(got[:old_rows], 0.25 * value, rtol=0, atol=0)
            # the new items' rows are drawn as for a fresh model, never scaled
            assert torch.equal(got[old_rows:], plain.item_emb.weight.detach()[old_rows:])
        elif value.dim() >= 2:
            torch.testing.assert_close(got, 0.25 * value, rtol=0, atol=0)
        else:  # LayerNorm gains and biases
            assert torch.equal(got, value), name
    assert torch.count_nonzero(shrunk.item_emb.weight[0]) == 0  # padding stays zero
    # train() applies the config's warm_shrink: a zero learning rate leaves the shrunk weights.
    cfg = TrainConfig.finetune(lr=0.0, epochs=1, eval_every=1, seed=0, warm_shrink=0.25)
    result = train(leave_last_out(walks(40, N_ITEMS, seed=3)), N_ITEMS, MODEL, cfg, init=ckpt)
    for name, value in ckpt.model_state.items():
        want = 0.25 * value if value.dim() >= 2 else value
        torch.testing.assert_close(result.checkpoint.model_state[name], want, rtol=0, atol=0)


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5])
def test_bad_warm_shrink_is_refused(trained, split, bad):
    with pytest.raises(ValueError, match="warm_shrink"):
        init_model(N_ITEMS, MODEL, init=trained.checkpoint, shrink=bad)
    with pytest.raises(ValueError, match="warm_shrink"):
        train(split, N_ITEMS, MODEL, dataclasses.replace(TRAIN, warm_shrink=bad))


def test_incremental_without_init_is_an_error(split):
    with pytest.raises(ValueError, match="init"):
        train(split, N_ITEMS, MODEL, TrainConfig.finetune())


def test_time_budget_stops_training(split):
    result = train(split, N_ITEMS, MODEL, dataclasses.replace(TRAIN, max_seconds=0.0))
    assert len(result.losses) == 1
    assert [row["epoch"] for row in result.history] == [1]
    assert result.checkpoint.model_state  # a checked, usable state is still returned


def test_train_leaves_the_global_rng_alone(split):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(split, N_ITEMS, MODEL, dataclasses.replace(TRAIN, epochs=1))
    assert torch.equal(torch.rand(3), expected)


def test_lr_schedules_warm_up_then_hold_or_decay_to_zero():
    from recsys.training.optim import lr_at

    const = TrainConfig(lr=1e-3, epochs=10, warmup_epochs=0)
    assert [lr_at(const, p) for p in (0.0, 5.0, 10.0)] == [1e-3] * 3
    default = TrainConfig()  # warms up over 5 epochs, then holds
    assert [lr_at(default, p) for p in (0.0, 2.5, 5.0, 50.0)] == pytest.approx(
        [0, 1.5e-3, 3e-3, 3e-3]
    )
    assert TrainConfig.finetune().warmup_epochs == 0  # a warm start needs no warm-up
    cos = TrainConfig(lr=2e-3, epochs=12, schedule="cosine", warmup_epochs=2)
    assert lr_at(cos, 0.0) == 0.0
    assert lr_at(cos, 1.0) == pytest.approx(1e-3)  # half-way through the linear warm-up
    assert lr_at(cos, 2.0) == pytest.approx(2e-3)  # peak
    assert lr_at(cos, 7.0) == pytest.approx(1e-3)  # half-way through the decay
    assert lr_at(cos, 12.0) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(cos, 20.0) == pytest.approx(0.0, abs=1e-12)  # past the end: stays at 0
    decay = [lr_at(cos, p) for p in range(2, 13)]
    assert decay == sorted(decay, reverse=True)


def test_the_optimizer_follows_the_schedule_and_bad_schedules_are_refused(split):
    from recsys.training.optim import lr_at

    cfg = dataclasses.replace(TRAIN, epochs=2, eval_every=1, schedule="cosine")
    result = train(split, N_ITEMS, MODEL, cfg)
    n_batches = -(-len(build_windows(split.train, MODEL.max_len)) // cfg.batch_size)
    last = result.checkpoint.optimizer_state["param_groups"][0]["lr"]  # the best epoch's last step
    assert last == pytest.approx(lr_at(cfg, result.best_epoch - 1 / n_batches))
    assert last < cfg.lr
    with pytest.raises(ValueError, match="schedule"):
        train(split, N_ITEMS, MODEL, dataclasses.replace(TRAIN, schedule="linear"))


@pytest.mark.parametrize("dense", [False, True], ids=["cpu-step", "gpu-step"])
def test_an_epoch_weighs_every_target_alike_whatever_its_batch(monkeypatch, dense):
    """Length-bucketed batches carry very different numbers of targets. One epoch of tiny SGD
    steps must move the weights like ``n_batches`` steps on the mean loss over all targets,
    as if batches were uniform: a target of a short history is not worth more than another.
    Both forms of a step: the CPU's (indexed, chunked loss) and the GPU's (dense loss)."""
    import recsys.training.loop as T
    import recsys.training.losses as L

    monkeypatch.setattr(T, "GRAD_CLIP", 1e9)
    monkeypatch.setattr(T, "_dense_steps", lambda device, cfg: dense)
    cfg = dataclasses.replace(TRAIN, lr=1e-3, batch_size=2)
    sequences = [[1, 2, 3], [4, 5, 6], [7, 8, 9, 10] * 5, [11, 12, 13, 14] * 5]  # 2 + 2 + 19 + 19
    data = build_windows(sequences, max_len=20)
    torch.manual_seed(0)
    model = init_model(N_ITEMS, dataclasses.replace(MODEL, dropout=0.0)).double()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}

    x, y = data[:, :-1], data[:, 1:]
    sel = (x != 0) & (y != 0)
    seen = L.seen_items(x, sel)  # cfg.mask_seen is on, as by default
    assert cfg.mask_seen
    full = L.SoftmaxCrossEntropy.apply(model.hidden(x)[sel], model.item_emb.weight, y[sel], seen)
    names = [n for n, _ in model.named_parameters()]
    grads = torch.autograd.grad(full, list(model.parameters()))
    expected = {n: -cfg.lr * 2 * g for n, g in zip(names, grads, strict=True)}  # 2 batches

    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(0)
    T._run_epoch(model, T._Hidden(model), opt, data, cfg, gen, deadline=float("inf"))
    moved = {n: p.detach() - start[n] for n, p in model.named_parameters()}
    for name in ("item_emb.weight", "blocks.0.attn.qkv.weight", "pos_emb.weight"):
        err = (moved[name] - expected[name]).norm() / expected[name].norm()
        assert err < 0.02, (name, float(err))


def test_weight_average_moves_by_its_decay_and_swaps_back_after_use():
    torch.manual_seed(0)
    model = SASRec(N_ITEMS, MODEL)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    ema = WeightAverage(model, halflife_steps=1.0)  # decay 0.5 per step
    ema.updates = 100  # past the early cap (1 + n) / (10 + n)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    for key, value in start.items():
        torch.testing.assert_close(ema.shadow[key], value + 0.5)
    with ema.applied(model):
        for key, value in model.state_dict().items():
            torch.testing.assert_close(value, start[key] + 0.5)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, start[key] + 1.0)  # the raw weights are back


def test_with_weight_averaging_the_average_is_validated_and_returned(split):
    cfg = dataclasses.replace(TRAIN, epochs=6, eval_every=2, ema_halflife_epochs=1.0)
    averaged = train(split, N_ITEMS, MODEL, cfg)
    raw = train(split, N_ITEMS, MODEL, dataclasses.replace(cfg, ema_halflife_epochs=0.0))
    assert averaged.losses == raw.losses  # the same training steps
    again = evaluate_model(build_model(averaged.checkpoint), split, N_ITEMS, on="valid")
    assert again["ndcg_at_10"] == pytest.approx(averaged.best_valid["ndcg_at_10"])
    emb = "item_emb.weight"
    assert not torch.equal(averaged.checkpoint.model_state[emb], raw.checkpoint.model_state[emb])


def test_drop_items_hides_inputs_but_never_padding_or_the_last_column():
    torch.manual_seed(0)
    x = torch.randint(1, N_ITEMS, (64, 30))
    x[:, :5] = 0  # padding
    dropped = drop_items(x, 0.25)
    hidden = (dropped == 0) & (x != 0)
    assert torch.equal(dropped[~hidden], x[~hidden])  # only turned to padding, nothing else
    assert not hidden[:, -1].any() and not hidden[:, :5].any()
    share = hidden[:, 5:-1].float().mean().item()
    assert 0.2 < share < 0.3
    assert torch.equal(drop_items(x, 0.0), x)


@pytest.mark.parametrize("bad", [{"item_dropout": 1.0}, {"item_dropout": -0.1},
                                 {"ema_halflife_epochs": -1.0}])  # fmt: skip
def test_bad_augmentation_or_averaging_is_refused(split, bad):
    with pytest.raises(ValueError, match="item_dropout"):
        train(split, N_ITEMS, MODEL, dataclasses.replace(TRAIN, **bad))


def test_item_dropout_changes_the_training_steps_and_stays_seeded(split):
    cfg = dataclasses.replace(TRAIN, epochs=2, eval_every=1, item_dropout=0.3)
    a, b = train(split, N_ITEMS, MODEL, cfg), train(split, N_ITEMS, MODEL, cfg)
    plain = train(split, N_ITEMS, MODEL, dataclasses.replace(cfg, item_dropout=0.0))
    assert a.losses == b.losses
    assert a.losses != plain.losses


def test_early_stopping_waits_for_min_steps(split):
    steps_per_epoch = -(-len(build_windows(split.train, MODEL.max_len)) // TRAIN.batch_size)
    frozen = dataclasses.replace(TRAIN, lr=0.0, epochs=20, eval_every=1, patience=1, min_steps=0)
    assert len(train(split, N_ITEMS, MODEL, frozen).losses) == 2  # the second check stops it
    waiting = dataclasses.replace(frozen, min_steps=5 * steps_per_epoch)
    assert len(train(split, N_ITEMS, MODEL, waiting).losses) == 5


def test_chunked_loss_stays_exact_when_a_targets_probability_underflows():
    """The loss is read from the softmax's target probability; a target scored so far below the
    rest that its probability is 0 in floating point must still give the exact, finite loss."""
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(4, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(12, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([3, 5, 7, 9])
    with torch.no_grad():
        weight[7] = -300.0 * hidden[2] / hidden[2].norm()  # row 2's target logit is far below 0
        hidden[2] *= 10.0
    got = SoftmaxCrossEntropy.apply(hidden, weight, targets)
    want = torch.nn.functional.cross_entropy(hidden @ weight.T, targets)
    assert torch.softmax(hidden[2] @ weight.T, dim=0)[7] == 0.0  # it does underflow
    assert torch.isfinite(got)
    torch.testing.assert_close(got, want)
    for g, w in zip(torch.autograd.grad(got, [hidden, weight]),
                    torch.autograd.grad(want, [hidden, weight]), strict=True):  # fmt: skip
        torch.testing.assert_close(g, w)


def test_dense_loss_sum_is_the_cross_entropy_of_the_kept_positions():
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 5, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(12, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 12, (3, 5), generator=gen)
    keep = torch.rand(3, 5, generator=gen) < 0.6
    got = dense_loss_sum(hidden, weight, targets, keep)
    rows = hidden[keep] @ weight.T  # (M, V)
    want = torch.nn.functional.cross_entropy(rows, targets[keep], reduction="sum")
    assert 0 < int(keep.sum()) < keep.numel()
    torch.testing.assert_close(got, want)
    got_grads = torch.autograd.grad(got, [hidden, weight])
    want_grads = torch.autograd.grad(want, [hidden, weight])
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w)
    assert float(got_grads[0][~keep].abs().max()) == 0.0  # ignored positions get no gradient


def test_seen_items_hold_each_positions_prefix():
    inputs = torch.tensor([[0, 3, 5, 3]])
    every = seen_items(inputs)[0].tolist()
    assert every == [
        [0, 0, 0, 0],  # a padded position has seen nothing
        [0, 3, 0, 0],
        [0, 3, 5, 0],
        [0, 3, 5, 3],
    ]
    sel = torch.tensor([[False, True, False, True]])
    assert seen_items(inputs, sel).tolist() == [every[1], every[3]]  # the rows of x[sel]


def _masked_cross_entropy(rows, weight, targets, seen):
    """The reference: each row's seen items out of its softmax, but never its own target."""
    seen = seen.masked_fill(seen == targets[:, None], 0)  # (M, T)
    logits = (rows @ weight.T).scatter(1, seen, float("-inf"))  # (M, V)
    logits[:, 0] = float("-inf")  # padding: out of every row's softmax, even one with no 0 seen
    return torch.nn.functional.cross_entropy(logits, targets, reduction="sum")


def test_both_losses_leave_the_seen_items_but_not_the_target_out_of_the_softmax(monkeypatch):
    import recsys.training.losses as L

    monkeypatch.setattr(L, "CE_CHUNK", 4)  # several chunks, the last one short
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 5, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(12, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    inputs = torch.randint(1, 6, (3, 5), generator=gen)  # few items: many repeats
    targets = torch.randint(1, 6, (3, 5), generator=gen)
    inputs[0, :2] = 0  # padding
    keep = inputs != 0
    seen = seen_items(inputs, keep)  # (M, 5)
    assert (seen == targets[keep][:, None]).any()  # some targets were seen before: repeats
    want = _masked_cross_entropy(hidden[keep], weight, targets[keep], seen)
    rows = hidden[keep] @ weight.T  # (M, V)
    plain = torch.nn.functional.cross_entropy(rows, targets[keep], reduction="sum")
    assert torch.isfinite(want) and want.item() < plain.item()  # the mask changed the loss
    want_grads = torch.autograd.grad(want, [hidden, weight])
    n = int(keep.sum())
    chunked = L.SoftmaxCrossEntropy.apply(hidden[keep], weight, targets[keep], seen) * n
    dense = dense_loss_sum(hidden, weight, targets, keep, seen_items(inputs))
    for got in (chunked, dense):
        torch.testing.assert_close(got, want)
        for g, w in zip(torch.autograd.grad(got, [hidden, weight]), want_grads, strict=True):
            torch.testing.assert_close(g, w)


def test_mask_seen_takes_the_seen_items_out_of_the_training_loss(split):
    cfg = dataclasses.replace(TRAIN, epochs=1, eval_every=1)
    plain = train(split, N_ITEMS, MODEL, dataclasses.replace(cfg, mask_seen=False))
    masked = train(split, N_ITEMS, MODEL, dataclasses.replace(cfg, mask_seen=True))
    # Each user's 15-30 items are up to half the 60-item catalogue: a much smaller softmax.
    assert masked.losses[0] < plain.losses[0] - 0.1
    sampled = dataclasses.replace(cfg, loss="sampled", n_negatives=50)
    plain = train(split, N_ITEMS, MODEL, dataclasses.replace(sampled, mask_seen=False))
    masked = train(split, N_ITEMS, MODEL, dataclasses.replace(sampled, mask_seen=True))
    assert masked.losses[0] < plain.losses[0] - 0.1


@pytest.mark.parametrize("mask_seen", [False, True], ids=["all-items", "mask-seen"])
def test_the_gpu_form_of_a_step_trains_like_the_cpu_one(split, monkeypatch, mask_seen):
    """The GPU's step (data moved once, dense loss, one read-back per epoch) is the same
    training as the CPU's, up to float rounding; run here on the CPU."""
    import recsys.training.loop as T

    cfg = dataclasses.replace(TRAIN, epochs=4, eval_every=2, mask_seen=mask_seen)
    cpu = train(split, N_ITEMS, MODEL, cfg)
    monkeypatch.setattr(T, "_dense_steps", lambda device, cfg: True)
    dense = train(split, N_ITEMS, MODEL, cfg)
    np.testing.assert_allclose(dense.losses, cpu.losses, rtol=1e-5)
    assert dense.best_epoch == cpu.best_epoch
    assert dense.best_valid["ndcg_at_10"] == pytest.approx(cpu.best_valid["ndcg_at_10"], abs=1e-6)


def test_bf16_precision_trains_close_to_fp32_and_other_precisions_are_refused(split):
    cfg = dataclasses.replace(TRAIN, epochs=2, eval_every=1)
    fp32 = train(split, N_ITEMS, MODEL, cfg)
    bf16 = train(split, N_ITEMS, MODEL, dataclasses.replace(cfg, precision="bf16"))
    assert bf16.losses != fp32.losses  # the steps really ran in bf16
    np.testing.assert_allclose(bf16.losses, fp32.losses, rtol=0.02)
    assert all(p.dtype == torch.float32 for p in bf16.checkpoint.model_state.values())
    with pytest.raises(ValueError, match="precision"):
        train(split, N_ITEMS, MODEL, dataclasses.replace(cfg, precision="fp16"))


def test_compiled_training_learns(split):
    cfg = dataclasses.replace(TRAIN, epochs=6, eval_every=3, compile=True)
    got = train(split, N_ITEMS, MODEL, cfg)
    assert got.losses[-1] < 0.8 * got.losses[0]
    model = build_model(got.checkpoint)  # the plain model: compiling changes no weight name
    ndcg = evaluate_model(model, split, N_ITEMS, k=10, on="test")["ndcg_at_10"]
    assert ndcg > evaluate_popularity(split, N_ITEMS, k=10, on="test")["ndcg_at_10"] + 0.1


def test_resolve_device_takes_a_gpu_only_when_torch_sees_one():
    from recsys.training.loop import resolve_device

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if gpus else "cpu")
    with pytest.raises(RuntimeError, match=f"torch sees {gpus} GPUs"):
        resolve_device(f"cuda:{gpus}")


def test_progress_reports_every_epoch_with_its_loss_and_latest_check(split):
    reports = []
    cfg = dataclasses.replace(TRAIN, epochs=6, eval_every=3, patience=10)
    result = train(split, N_ITEMS, MODEL, cfg, progress=reports.append)
    assert [r.epoch for r in reports] == [1, 2, 3, 4, 5, 6]
    assert [r.loss for r in reports] == result.losses
    checks = {row["epoch"]: row["ndcg_at_10"] for row in result.history}
    expected = [None, None, checks[3], checks[3], checks[3], checks[6]]
    assert [r.valid_ndcg for r in reports] == expected
    assert all(r.epochs == 6 and r.max_seconds == cfg.max_seconds for r in reports)
    elapsed = [r.elapsed_s for r in reports]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0
    assert reports[-1].eta_s == 0  # the last epoch: nothing left
