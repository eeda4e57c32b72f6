"""The model store: whole versions or none, IDs checked, and errors that name the file; B's column encoding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from party_b.store import row_digests
from protocol.data.tables import Encoding, TableSpec, encode_features, fit_encoding
from protocol.errors import DataError, StoreError
from protocol.runtime.store import current_model, new_model_id, read_manifest, write_model


def stored(tmp_path: Path, model_id: str = "run-1-x") -> Path:
    return write_model(tmp_path, model_id, {"role": "party_b", "files": ["a.bin"]}, {"a.bin": b"payload"})


def test_a_written_model_is_the_current_one_and_reads_back(tmp_path: Path) -> None:
    directory = stored(tmp_path)
    found, manifest = current_model(tmp_path, "party_b", expected="run-1-x")
    assert found == directory and manifest["model_id"] == "run-1-x"
    assert (directory / "a.bin").read_bytes() == b"payload"
    assert not list((tmp_path / "models").glob(".*"))  # no temporary left behind


def test_another_model_id_is_refused_naming_both(tmp_path: Path) -> None:
    stored(tmp_path)
    with pytest.raises(StoreError, match="'run-1-x'.*'run-2-y'"):
        current_model(tmp_path, "party_b", expected="run-2-y")


def test_missing_and_corrupt_stores_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="CURRENT is missing"):
        current_model(tmp_path, "party_a")
    directory = stored(tmp_path)
    (directory / "a.bin").unlink()
    with pytest.raises(StoreError, match="a.bin is missing"):
        current_model(tmp_path, "party_b")
    (directory / "manifest.json").write_text("{not json")
    with pytest.raises(StoreError, match="manifest.json is corrupt"):
        read_manifest(directory, "party_b")
    (directory / "manifest.json").write_text(json.dumps({"role": "party_a", "model_id": "run-1-x"}))
    with pytest.raises(StoreError, match="not party_b's manifest"):
        read_manifest(directory, "party_b")


def test_model_ids_are_never_reused(tmp_path: Path) -> None:
    stored(tmp_path)
    with pytest.raises(StoreError, match="never reused"):
        stored(tmp_path)
    assert new_model_id("r") != new_model_id("r")


def spec(path: Path) -> TableSpec:
    return TableSpec(path, "id", numeric=["x", "spend"], categorical=["band"], log=["spend"])


def frame() -> pd.DataFrame:
    return pd.DataFrame({"id": ["a", "b", "c"], "x": [1.0, 2.0, 4.0], "spend": [0.0, 10.0, 100.0],
                         "band": ["lo", "hi", "lo"]})


def test_an_encoding_fitted_once_encodes_a_changed_table_as_at_training(tmp_path: Path) -> None:
    s = spec(tmp_path / "b.csv")
    encoding = fit_encoding(frame(), s)
    again = Encoding.from_json(json.loads(json.dumps(encoding.to_json())))
    trained = encode_features(frame(), s)
    assert np.array_equal(again.apply(frame(), s).numeric, trained.numeric)
    changed = frame()
    changed.loc[1, "x"] = 50.0
    now = again.apply(changed, s)
    assert np.array_equal(now.numeric[[0, 2]], trained.numeric[[0, 2]])  # refitting would move every row
    digests, before = row_digests(now), row_digests(trained)
    assert [d != b for d, b in zip(digests, before)] == [False, True, False]


def test_a_category_the_model_never_saw_names_its_row(tmp_path: Path) -> None:
    s = spec(tmp_path / "b.csv")
    encoding = fit_encoding(frame(), s)
    changed = frame()
    changed.loc[2, "band"] = "mid"
    with pytest.raises(DataError, match=r"b.csv: column 'band' row 3 holds 'mid', a category the model never saw"):
        encoding.apply(changed, s)
