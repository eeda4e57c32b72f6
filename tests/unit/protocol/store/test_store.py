"""The model store: whole versions or none, IDs checked (a safe name, from a peer too), files its owner's alone, and
errors that name the file; B's column encoding."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from party_a.serving.store import write_u_store
from party_b.store import row_digests
from protocol.data.tables import Encoding, TableSpec, encode_features, fit_encoding
from protocol.errors import DataError, ProtocolError, StoreError
from protocol.messages.commands import Finish, command_from_message
from protocol.messages.run import RunDone, Starting
from protocol.messages.serving import RefreshDone, RefreshRequest
from protocol.names import is_safe_name
from protocol.runtime.checkpoint import write_checkpoint
from protocol.store.models import current_model, new_model_id, read_manifest, write_model
from protocol.wire.message import Message


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


def test_a_category_a_model_without_other_never_saw_names_its_row(tmp_path: Path) -> None:
    s = spec(tmp_path / "b.csv")
    stored = fit_encoding(frame(), s).to_json()
    del stored["other"]  # as stored before the "other" level existed
    changed = frame()
    changed.loc[2, "band"] = "mid"
    with pytest.raises(DataError, match=r"b.csv: column 'band' row 3 holds 'mid', a category the model never saw "
                                        r".*train a new model"):
        Encoding.from_json(stored).apply(changed, s)


TRAVERSAL = "./" + "../" * 30 + "tmp/x"  # the issue's: only parsed here; a store given it would write to /tmp/x


@pytest.mark.parametrize("model_id", ["../../escaped", "..", ".", "a/b", "/abs", "-flag", "", "x" * 201, "a\x00b"])
def test_a_model_id_that_is_not_a_safe_name_is_refused_by_the_store(tmp_path: Path, model_id: str) -> None:
    with pytest.raises(StoreError, match="'model_id'.*not a safe name"):
        stored(tmp_path / "work", model_id)
    assert list(tmp_path.iterdir()) == []  # nothing written, in the work directory ("../../escaped") or beside it


@pytest.mark.parametrize("kind, body, peer", [
    (Finish, {"op": "done", "model_id": TRAVERSAL, "epoch": 1, "promote": True}, "party_a"),
    (RunDone, {"model_id": TRAVERSAL, "promote": True}, "party_a"),
    (Starting, {"model_id": "../x"}, "party_b"),
    (RefreshRequest, {"model_id": "../x", "users": np.arange(2), "roster_size": 2, "roster_digest": "0f"},
     "party_b"),
    (RefreshDone, {"model_id": "a/b", "users": 2}, "party_a"),
])
def test_a_peer_model_id_that_would_leave_the_store_is_refused_naming_peer_and_field(
        kind: type[Message], body: dict, peer: str) -> None:
    with pytest.raises(ProtocolError, match=rf"{peer} sent an invalid {kind.__name__}: field 'model_id' = .* is "
                                            r"not a safe name"):
        command_from_message(body, peer) if kind is Finish else kind.from_message(body, peer)


def test_a_model_id_from_a_run_id_with_unsafe_characters_is_safe() -> None:
    assert is_safe_name(new_model_id("../my run/1")) and is_safe_name(new_model_id("r" * 300))


def test_store_and_checkpoint_files_are_their_owners_alone_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        directory = stored(tmp_path)
        write_u_store(directory, pd.DataFrame({"user_id": ["a"], "u0": [1.0], "written": [0.0]}))
        checkpoint = write_checkpoint(tmp_path, "run-1", 3, {"role": "party_b"}, {"w.bin": b"w"}, keep=2)
    finally:
        os.umask(old)
    files = [directory / "a.bin", directory / "manifest.json", directory / "u.parquet",
             tmp_path / "models" / "CURRENT", checkpoint / "w.bin", checkpoint / "manifest.json"]
    assert {str(p): oct(p.stat().st_mode & 0o777) for p in files} == {str(p): "0o600" for p in files}
    dirs = [tmp_path / "models", directory, tmp_path / "checkpoints", checkpoint.parent, checkpoint]
    assert {str(p): oct(p.stat().st_mode & 0o777) for p in dirs} == {str(p): "0o700" for p in dirs}
