"""Activity segments: the bounds, the choice on validation, and scoring each user by its segment's choice."""

from __future__ import annotations

import numpy as np

from party_a.models.evaluate import EvalSet
from party_a.models.evaluate import per_user
from party_a.data.segments import by_segment, choose, combined, segment_masks, segment_of


def lists(activity: list[int]) -> EvalSet:
    n = len(activity)
    return EvalSet("valid", np.arange(n), np.tile(np.arange(4), (n, 1)), [np.empty(0, np.int64)] * n,
                   np.array(activity) <= 2, np.array(activity))


def test_segments_split_users_by_training_events() -> None:
    masks = segment_masks(np.array([0, 2, 3, 10, 11, 500]))
    assert {name: m.nonzero()[0].tolist() for name, m in masks.items()} == {"0-2": [0, 1], "3-10": [2, 3],
                                                                            "11+": [4, 5]}


def test_each_segment_takes_its_best_scorer_and_ties_go_to_the_earlier() -> None:
    ev = lists([1, 1, 5, 5, 20, 20])
    hit, miss = np.array([1.0, 0, 0, 0]), np.array([0.0, 1, 1, 1])  # held-out item first: ranked 1st or 4th
    scores = {"federated": np.array([miss, miss, hit, hit, hit, hit]),
              "a_alone": np.array([miss, miss, hit, hit, hit, hit]),
              "popularity": np.array([hit, hit, miss, miss, miss, miss])}
    valid = {name: by_segment(s, ev, k=1) for name, s in scores.items()}
    assert valid["popularity"]["0-2"]["hr"] == 1.0 and valid["federated"]["0-2"]["hr"] == 0.0
    choice = choose({name: per_user(s, 1)[2] for name, s in scores.items()}, ev.activity)
    assert choice == {"0-2": "popularity", "3-10": "federated", "11+": "federated"}
    served = combined(scores, choice, ev, k=1)
    assert served["overall"]["hr"] == 1.0


def test_a_segment_without_users_keeps_the_first_candidate() -> None:
    ndcg = {"federated": np.zeros(2), "popularity": np.ones(2)}
    assert choose(ndcg, np.array([1, 2])) == {"0-2": "popularity", "3-10": "federated", "11+": "federated"}


def test_a_segment_leaves_the_first_candidate_only_for_a_significant_gain() -> None:
    rng = np.random.default_rng(0)
    federated = rng.random(300)
    activity = np.ones(300, dtype=np.int64)
    noise = federated + rng.normal(0.01, 0.3, 300)  # a point better on average, within the noise
    assert choose({"federated": federated, "item_knn": noise}, activity)["0-2"] == "federated"
    better = federated + rng.normal(0.1, 0.3, 300)  # ten points better: about six standard errors
    assert choose({"federated": federated, "item_knn": better}, activity)["0-2"] == "item_knn"


def test_a_user_is_served_by_the_segment_its_masks_put_it_in() -> None:
    events = np.array([0, 1, 2, 3, 10, 11, 500])
    assert [segment_of(int(e)) for e in events] == ["0-2", "0-2", "0-2", "3-10", "3-10", "11+", "11+"]
    masks = segment_masks(events)
    assert all(masks[segment_of(int(e))][i] for i, e in enumerate(events))
    assert sum(m.astype(int) for m in masks.values()).tolist() == [1] * len(events)
