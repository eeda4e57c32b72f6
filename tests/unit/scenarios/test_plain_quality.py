"""Both stories in plaintext at a small size: the ordering the issue asks of the models, on one seed.

Our model without B (A alone) must match A's best single-party baseline (item-kNN,
EASE) and beat popularity on cold users; with B's tower and W in the clear
(centralised, what the federated model computes up to fixed-point rounding) it must
beat A alone on cold users. Seeded and single-threaded, so the figures repeat.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scenarios.plain_quality import one_seed


@pytest.mark.parametrize(("story", "users"), [("ecommerce_bank", 2000), ("bank_offers", 1000)])
def test_a_alone_matches_the_best_baseline_and_b_helps_cold_users(story: str, users: int, tmp_path: Path) -> None:
    _, r = one_seed(story, tmp_path, users, epochs=12, seed=0)
    for metric in ("hr", "ndcg"):
        best = max(r["item_knn"]["overall"][metric], r["ease"]["overall"][metric])
        assert r["a_alone"]["overall"][metric] >= best
    cold = {model: r[model]["cold"]["hr"] for model in r}
    assert cold["centralised"] > cold["a_alone"] > cold["popularity"]
