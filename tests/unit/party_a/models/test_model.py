"""A's model: the item-item scores it trains on, and the secure layer's contract (one δ row per user)."""

from __future__ import annotations

import numpy as np
import torch

from party_a.models.baselines import ease, gram
from party_a.config import ModelSettings
from party_a.data.tables import ActiveData
from party_a.models.evaluate import eval_set
from party_a.models.model import PRIOR_WEIGHTS, ActiveModel, active_step, chosen_prior_weight, equal_norms
from party_a.data.sampler import Sampler
from party_a.models.scoring import item_item
from protocol.data.tables import Features

N_ITEMS, LAMBDA = 7, 2.0


def features(rows: int) -> Features:
    return Features(np.random.default_rng(rows).normal(size=(rows, 1)).astype(np.float32),
                    np.zeros((rows, 0), np.int64), [])


def tiny_data() -> ActiveData:
    rng = np.random.default_rng(0)
    train = [rng.choice(N_ITEMS, size=int(rng.integers(1, 6)), replace=False) for _ in range(12)]
    others = [rng.choice(N_ITEMS, size=3, replace=False) for _ in range(3)]
    none = np.full(12, -1)
    return ActiveData(features(12), features(N_ITEMS), train, [frozenset(t) for t in train], none, none, others)


def test_training_targets_get_the_ease_scores_of_a_fit_without_the_user() -> None:
    data = tiny_data()
    model = ActiveModel(data, ModelSettings(history=6), ease_lambda=LAMBDA)
    user = int(np.argmax([t.size for t in data.train]))
    items = np.full(6, N_ITEMS)
    items[6 - data.train[user].size:] = data.train[user]
    rows = [t for k, t in enumerate(data.train) if k != user] + data.others
    b = ease(gram(rows, N_ITEMS), LAMBDA)  # refitted from scratch without the user's row
    candidates = np.setdiff1d(np.arange(N_ITEMS), data.train[user])
    for cut in range(6 - data.train[user].size, 7):
        whole, latest = item_item(model.p, model.p_diag, torch.from_numpy(items)[None], torch.tensor([[cut]]),
                                  training=True)
        before = items[:cut][items[:cut] < N_ITEMS]
        assert np.allclose(whole[0, 0, candidates], b[before].sum(0)[candidates], atol=1e-5)
        assert np.allclose(latest[0, 0, candidates], b[before[-1:]].sum(0)[candidates], atol=1e-5)
    full = ease(gram([*data.train, *data.others], N_ITEMS), LAMBDA)  # evaluation: the fit on every row
    whole, latest = item_item(model.p, model.p_diag, torch.from_numpy(items)[None], torch.tensor([[6]]), training=False)
    assert np.allclose(whole[0, 0, candidates], full[data.train[user]].sum(0)[candidates], atol=1e-5)


def test_items_before_the_window_count_as_ease_counts_them() -> None:
    """The embeddings read a window of recent items, the item-item part the whole history: a training target
    gets the refitted EASE scores of every item before it, and evaluation EASE's scores of the whole history,
    whatever the window."""
    data = tiny_data()
    user = int(np.argmax([t.size for t in data.train]))
    train, window = data.train[user], 2
    model = ActiveModel(data, ModelSettings(history=window), ease_lambda=LAMBDA)
    rows = [t for k, t in enumerate(data.train) if k != user] + data.others
    b = ease(gram(rows, N_ITEMS), LAMBDA)
    candidates = np.setdiff1d(np.arange(N_ITEMS), train)
    recent, earlier = torch.from_numpy(train[-window:])[None], torch.from_numpy(train[:-window])[None]
    for cut in range(window + 1):
        whole, latest = item_item(model.p, model.p_diag, recent, torch.tensor([[cut]]), True, earlier)
        before = train[: train.size - window + cut]
        assert np.allclose(whole[0, 0, candidates], b[before].sum(0)[candidates], atol=1e-5)
        if cut:
            assert np.allclose(latest[0, 0, candidates], b[before[-1]][candidates], atol=1e-5)
    full = ease(gram([*data.train, *data.others], N_ITEMS), LAMBDA)
    whole, _ = item_item(model.p, model.p_diag, torch.from_numpy(train)[None], torch.tensor([[train.size]]), False)
    assert np.allclose(whole[0, 0, candidates], full[train].sum(0)[candidates], atol=1e-5)
    longer = ActiveModel(data, ModelSettings(history=6), ease_lambda=LAMBDA)  # as it starts: the item-item part
    users, items, u = torch.arange(12), torch.arange(N_ITEMS).repeat(12, 1), torch.zeros(12, 16)
    with torch.no_grad():
        assert torch.allclose(model.score(data.train, users, items, u), longer.score(data.train, users, items, u))


def test_one_delta_row_per_user_whatever_its_activity() -> None:
    data = tiny_data()
    model = ActiveModel(data, ModelSettings(h=4, history=6), ease_lambda=LAMBDA)
    with torch.no_grad():  # q_j as training leaves them: u enters
        model.partner_items.mlp[-1].bias.fill_(0.5)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    batch = next(Sampler(data, batch_users=5, history=6, targets=3, seed=1).epoch(1))
    u = torch.randn(5, 4)
    loss, delta = active_step(model, optimizer, batch, u)
    assert delta.shape == (5, 4) and np.isfinite(loss) and torch.isfinite(delta).all()
    assert (delta.abs().sum(1) > 0).all()  # every user, even one with a single item, gets a gradient
    norms = delta.norm(dim=1)
    assert torch.allclose(norms, norms.mean())  # B cannot read a user's activity from ‖δ‖
    assert sorted(np.concatenate([b.users for b in Sampler(data, 5, 6, 3, 1).epoch(2)])) == list(range(12))


def test_u_enters_only_as_far_as_p_learns_it() -> None:
    """The q_j start at zero: the model scores as if u were 0 and sends δ = 0; they learn from the first step
    on, and then δ reaches every user."""
    data = tiny_data()
    model = ActiveModel(data, ModelSettings(h=4, history=6), ease_lambda=LAMBDA)
    histories, users = [data.train[k] for k in range(5)], torch.arange(5)
    items = torch.arange(N_ITEMS).repeat(5, 1)
    u = torch.randn(5, 4)
    with torch.no_grad():
        assert torch.equal(model.score(histories, users, items, u), model.score(histories, users, items, 0 * u))
    optimizer = torch.optim.Adam(model.partner_items.parameters(), lr=0.01)
    batch = next(Sampler(data, batch_users=5, history=6, targets=3, seed=1).epoch(1))
    _, first = active_step(model, optimizer, batch, u)
    assert not first.any() and model.partner_items.mlp[-1].weight.abs().sum() > 0
    _, second = active_step(model, optimizer, batch, u)
    assert (second.abs().sum(1) > 0).all()


def test_equal_norms_keeps_directions_and_hides_empty_users() -> None:
    delta = torch.tensor([[3.0, 4.0], [0.0, 1.0], [0.0, 0.0]])
    out = equal_norms(delta)
    assert torch.allclose(out.norm(dim=1), torch.full((3,), 3.0))  # mean of the non-zero norms 5 and 1
    assert torch.allclose(out[0], torch.tensor([1.8, 2.4])) and torch.allclose(out[1], torch.tensor([0.0, 3.0]))


def test_the_prior_weight_is_the_one_whose_start_validates_best_or_ease_alone() -> None:
    """The best weight on validation, unless it does not beat EASE alone (weight 0) significantly: on twelve users
    nothing does, so the start is EASE."""
    base = tiny_data()
    held = np.array([int(np.setdiff1d(np.arange(N_ITEMS), t)[0]) for t in base.train])  # one held-out item each
    data = ActiveData(base.user_features, base.item_features, base.train,
                      [frozenset(t) | {h} for t, h in zip(base.train, held)], held, np.full(12, -1), base.others)
    valid = eval_set(data, "valid", negatives=3, cold_max_train=2, seed=0)
    settings = ModelSettings(h=4, history=6)
    weight, tried = chosen_prior_weight(data, settings, LAMBDA, valid, k=2)
    assert set(tried) == set(PRIOR_WEIGHTS) and weight == 0.0
    biases = [ActiveModel(data, settings, LAMBDA, w).item_bias.detach() for w in (0.5, 1.0)]
    assert torch.allclose(2 * biases[0], biases[1])  # the weight scales the popularity prior, nothing else
