"""Encoding a table as at training: rare and unseen categories go to the column's "other" level; numbers beyond the
training range are clipped. What a refresh (party_b/refresh.py) or a warm start does with B's or A's changed table."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from party_a.data.tables import InteractionsSpec, load_tables
from protocol.data.tables import CLIP, Encoding, TableSpec, fit_encoding, rare_below
from protocol.data.towers import FeatureTower
from psi.ids import Normalizer


def table(bands: list[str], x: list[float] | None = None) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"u{i}" for i in range(len(bands))], "band": bands,
                         "x": x if x is not None else np.arange(len(bands), dtype=float)})


SPEC = TableSpec(Path("b.csv"), "id", numeric=["x"], categorical=["band"])


def test_the_rare_rule_folds_levels_under_five_rows_only_in_tables_of_a_thousand_rows_or_more() -> None:
    assert [rare_below(n) for n in (3, 999, 1000, 1001, 2500, 5000, 10**6)] == [1, 1, 1, 2, 3, 5, 5]
    big = ["common"] * 5990 + ["four"] * 4 + ["five"] * 5 + ["one"]
    assert fit_encoding(table(big), SPEC).categories["band"] == ["common", "five"]
    small = ["common"] * 70 + ["one"] + ["two"] * 2  # a catalogue's brand held by one or two items is a level
    assert fit_encoding(table(small), SPEC).categories["band"] == ["common", "one", "two"]


def test_rare_rows_train_the_other_level() -> None:
    bands = ["common"] * 5990 + ["four"] * 4 + ["five"] * 5 + ["one"]
    features = fit_encoding(table(bands), SPEC).apply(table(bands), SPEC)
    assert features.cardinalities == [3] and features.has_other(0)
    other = np.flatnonzero(features.categorical[:, 0] == 2)
    assert set(np.asarray(bands)[other]) == {"four", "one"}
    torch.manual_seed(0)
    tower = FeatureTower(features, 4, [8], 8)
    tower(torch.from_numpy(other)).sum().backward()
    grad = tower.embeddings[0].weight.grad
    assert grad[2].abs().sum() > 0 and grad[:2].abs().sum() == 0


def test_frequent_levels_encode_and_start_as_before_the_other_level_existed() -> None:
    bands = ["lo", "hi", "mid", "lo"] * 300
    fitted = fit_encoding(table(bands), SPEC)
    before = fitted.to_json()
    del before["other"]  # the same encoding as stored before "other" existed
    old = Encoding.from_json(before)
    assert fitted.categories == old.categories == {"band": ["hi", "lo", "mid"]}
    new_features, old_features = fitted.apply(table(bands), SPEC), old.apply(table(bands), SPEC)
    assert np.array_equal(new_features.categorical, old_features.categorical)
    assert (new_features.cardinalities, old_features.cardinalities) == ([4], [3])
    towers, after = [], []
    for features in (new_features, old_features):
        torch.manual_seed(3)
        towers.append(FeatureTower(features, 4, [8], 8))
        after.append(torch.rand(5))  # what the RNG draws next: the other level's row drew nothing
    (new, old_tower) = (dict(t.named_parameters()) for t in towers)
    assert torch.equal(after[0], after[1])
    for name, value in old_tower.items():
        rows = value.shape[0]
        assert torch.equal(new[name][:rows], value), name
    assert torch.equal(new["embeddings.0.weight"][3], torch.zeros(3))
    rows = torch.arange(len(bands))
    assert torch.equal(towers[0](rows), towers[1](rows))


def test_an_unseen_value_is_encoded_as_other_and_counted_once_per_column_without_its_value(
        caplog: pytest.LogCaptureFixture) -> None:
    spec = TableSpec(Path("b.csv"), "id", categorical=["band", "tier"])
    frame = pd.DataFrame({"id": ["a", "b", "c", "d"], "band": ["lo", "hi", "lo", "hi"], "tier": ["x"] * 4})
    stored = Encoding.from_json(json.loads(json.dumps(fit_encoding(frame, spec).to_json())))
    changed = frame.assign(band=["lo", "secret-band-7", "secret-band-7", "other-secret"])
    with caplog.at_level(logging.DEBUG):
        features = stored.apply(changed, spec)
    assert features.categorical[:, 0].tolist() == [1, 2, 2, 2] and features.categorical[:, 1].tolist() == [0] * 4
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "column 'band': 3 values outside its 2 levels" in lines[0]
    assert "secret" not in caplog.text


def test_numbers_beyond_the_training_range_are_clipped_when_a_stored_encoding_is_applied(
        caplog: pytest.LogCaptureFixture) -> None:
    trained = table(["a"] * 20, [float(i) for i in range(20)])
    stored = Encoding.from_json(json.loads(json.dumps(fit_encoding(trained, SPEC).to_json())))
    changed = trained.assign(x=[1e9, -1e9] + [float(i) for i in range(2, 20)])
    with caplog.at_level(logging.WARNING):
        values = stored.apply(changed, SPEC).numeric[:, 0]
    assert values[0] == CLIP and values[1] == -CLIP
    assert np.array_equal(values[2:], stored.apply(trained, SPEC).numeric[2:, 0])
    assert "column 'x': 2 rows lie beyond" in caplog.text and "row 1" in caplog.text


def test_a_stored_model_encodes_a_s_changed_tables_as_it_learnt_them(tmp_path: Path) -> None:
    """A keeps its user and item encodings with the model (the manifest's "encodings"): a level new to A's tables
    since goes to "other", where fitting again would give it the code of a level the model learnt."""
    users = pd.DataFrame({"id": ["u0", "u1", "u2"], "channel": ["web", "shop", "web"]})
    items = tmp_path / "items.csv"
    pd.DataFrame({"sku": ["i0", "i1"], "brand": ["b", "c"]}).to_csv(items, index=False)
    events = tmp_path / "events.csv"
    pd.DataFrame({"user": ["u0", "u1", "u2"], "sku": ["i0", "i1", "i0"]}).to_csv(events, index=False)
    user_spec, item_spec = TableSpec(tmp_path / "users.csv", "id", categorical=["channel"]), \
        TableSpec(items, "sku", categorical=["brand"])
    interactions = InteractionsSpec(events, "user", "sku", None, 1.0, None)
    trained = load_tables(users, ["u0", "u1", "u2"], user_spec, Normalizer(), interactions, item_spec)
    stored = {name: Encoding.from_json(json.loads(json.dumps(e.to_json())))
              for name, e in trained.encodings.items()}
    assert sorted(stored) == ["items", "users"]
    grown = users.assign(channel=["web", "app", "web"])  # "app" sorts before "shop" and "web"
    pd.DataFrame({"sku": ["i0", "i1"], "brand": ["a", "c"]}).to_csv(items, index=False)
    now = load_tables(grown, ["u0", "u1", "u2"], user_spec, Normalizer(), interactions, item_spec,
                      encodings=stored)
    assert now.user_features.categorical[:, 0].tolist() == [1, 2, 1]  # web keeps its code, app is "other"
    assert now.item_features.categorical[:, 0].tolist() == [2, 1]
    assert now.encodings == stored
    refitted = load_tables(grown, ["u0", "u1", "u2"], user_spec, Normalizer(), interactions, item_spec)
    assert refitted.user_features.categorical[:, 0].tolist() == [1, 0, 1]  # app would be scored as shop
