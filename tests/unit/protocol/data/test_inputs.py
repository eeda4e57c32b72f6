"""Bad configs and bad tables stop a party before any network traffic, naming file, key, column, row."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from protocol.data.tables import CLIP, TableSpec, encode_features
from protocol.errors import ConfigError, DataError
from psi.align import UserIds
from psi.ids import Normalizer
from scenarios.launch import ROOT, to_toml, write_local_run


def users(tmp_path: Path, rows: dict, **spec: object) -> UserIds:
    path = tmp_path / "users.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return UserIds(TableSpec(path=path, id_column="id", **spec), Normalizer(kind="email"))


def test_missing_table(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"table .*nope.csv not found"):
        UserIds(TableSpec(tmp_path / "nope.csv", "id"), Normalizer()).load()


def test_missing_column_lists_the_columns(tmp_path: Path) -> None:
    u = users(tmp_path, {"email": ["a"]})
    with pytest.raises(DataError, match=r"users.csv: column 'id' not found; the table has columns 'email'"):
        u.load()


def test_ids_keep_leading_zeros_and_are_not_parsed(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text("id,x\n007,1\n7,2\n")
    _, ids = UserIds(TableSpec(path, "id"), Normalizer()).load()
    assert ids == ["007", "7"]


def test_empty_id_cell(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text("id,x\na,1\n,2\n")
    with pytest.raises(DataError, match=r"column 'id' row 2 has an empty ID"):
        UserIds(TableSpec(path, "id"), Normalizer()).load()


def test_bad_numeric_value_names_row(tmp_path: Path) -> None:
    u = users(tmp_path, {"id": ["a", "b", "c"], "income": ["1.5", "lots", "3"]}, numeric=["income"])
    frame, _ = u.load()
    with pytest.raises(DataError, match=r"column 'income' row 2 holds 'lots', not a finite number"):
        encode_features(frame, u.table)


@pytest.mark.parametrize(("csv", "spec", "message"), [
    ("id,income\na,1\nb,\nc,NaN\n", {"numeric": ["income"]}, r"column 'income' row 2 is empty \(2 such rows\)"),
    ("id,region\na,north\nb,\n", {"categorical": ["region"]}, r"column 'region' row 2 is empty"),
    ("id,amount\na,5\nb,-1\n", {"numeric": ["amount"], "log": ["amount"]}, r"column 'amount' row 2 is negative"),
])
def test_missing_or_bad_feature_values_name_row(tmp_path: Path, csv: str, spec: dict, message: str) -> None:
    path = tmp_path / "users.csv"
    path.write_text(csv)
    table = TableSpec(path, "id", **spec)
    frame, _ = UserIds(table, Normalizer()).load()
    with pytest.raises(DataError, match=message):
        encode_features(frame, table)


def test_an_extreme_cell_is_clipped_and_does_not_flatten_its_column(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    incomes = [str(1000.0 + 100 * i) for i in range(20)]
    incomes[6] = "1e300"
    path = tmp_path / "users.csv"
    pd.DataFrame({"id": [f"u{i}" for i in range(20)], "income": incomes}).to_csv(path, index=False)
    table = TableSpec(path, "id", numeric=["income"])
    frame, _ = UserIds(table, Normalizer()).load()
    with caplog.at_level(logging.WARNING):
        values = encode_features(frame, table).numeric[:, 0]
    others = np.delete(values, 6)
    assert values[6] == CLIP
    assert len(set(others.tolist())) == 19 and others.max() - others.min() > 1.5  # spread over their IQRs, not squeezed
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    message = caplog.records[0].getMessage()
    assert "users.csv: column 'income': 1 rows lie beyond" in message and "the first, row 7, holds 1e+300" in message


def test_extreme_values_stay_extreme_within_the_clip(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text("id,x\n" + "".join(f"u{i},{v}\n" for i, v in enumerate([1, 2, 3, 4, 5, 6, 7, 8, -1e308, 2e9])))
    table = TableSpec(path, "id", numeric=["x"])
    frame, _ = UserIds(table, Normalizer()).load()
    values = encode_features(frame, table).numeric[:, 0]
    assert values[8] == -CLIP and values[9] == CLIP and np.isfinite(values).all()


@pytest.mark.parametrize(("cell", "in_csv", "in_parquet"), [
    ("inf", "holds inf, not a finite number", "holds inf, not a finite number"),
    ("-inf", "holds -inf, not a finite number", "holds -inf, not a finite number"),
    ("nan", "holds 'nan', not a finite number", "is empty"),
])
def test_infinite_or_nan_cells_name_their_row_plainly(tmp_path: Path, cell: str, in_csv: str, in_parquet: str) -> None:
    for suffix, what in ((".csv", in_csv), (".parquet", in_parquet)):
        path = tmp_path / f"users{suffix}"
        frame = pd.DataFrame({"id": ["a", "b", "c"], "income": ["1.5", cell, "3"]})
        if suffix == ".csv":
            frame.to_csv(path, index=False)
        else:
            frame.assign(income=frame["income"].astype(float)).to_parquet(path)
        table = TableSpec(path, "id", numeric=["income"])
        loaded, _ = UserIds(table, Normalizer()).load()
        with pytest.raises(DataError, match=rf"users{suffix}: column 'income' row 2 {what} \(1 such rows\)$") as err:
            encode_features(loaded, table)
        assert "np." not in str(err.value)


def test_a_negative_cell_in_a_log_column_is_shown_plainly(tmp_path: Path) -> None:
    path = tmp_path / "users.parquet"
    pd.DataFrame({"id": ["a", "b"], "amount": [5.0, -2.5]}).to_parquet(path)
    table = TableSpec(path, "id", numeric=["amount"], log=["amount"])
    frame, _ = UserIds(table, Normalizer()).load()
    with pytest.raises(DataError, match=r"column 'amount' row 2 is negative \(-2.5\); log1p needs values >= 0"):
        encode_features(frame, table)


def test_parquet_tables(tmp_path: Path) -> None:
    path = tmp_path / "users.parquet"
    pd.DataFrame({"id": ["A@x", "b@x"], "age": [30, 40], "seg": ["p", "q"]}).to_parquet(path)
    spec = TableSpec(path, "id", numeric=["age"], categorical=["seg"])
    frame, ids = UserIds(spec, Normalizer(kind="email")).load()
    feats = encode_features(frame, spec)
    assert ids == ["a@x", "b@x"] and feats.cardinalities == [3] and feats.numeric.shape == (2, 1)  # p, q, other


def party_a_config(tmp_path: Path, users_section: dict) -> Path:
    run = write_local_run(tmp_path / "run", {"party_a": {"users": users_section}})
    return run.configs["party_a"]


def run_party_a(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "party_a", "--config", str(config)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_cli_reports_bad_input_before_any_network(tmp_path: Path) -> None:
    table = tmp_path / "users.csv"
    table.write_text("email\na@x.com\nb@x.com\nA@X.COM \n")
    config = party_a_config(tmp_path, {"table": str(table), "id_column": "email", "ids": {"kind": "email"}})
    result = run_party_a(config)
    assert result.returncode == 2
    expected = "users.csv: column 'email' has 1 duplicated IDs after normalisation (2 rows); first: row 1 and row 3"
    assert expected in result.stderr
    assert "listening" not in result.stderr  # it stopped before opening its endpoint


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda text: text + "\n[oops\n", "is not valid TOML"),
    (lambda text: text.replace("run_id", "workdirr = 'x'\nrun_id"), "unknown key workdirr"),
    (lambda text: text.replace("run_id", "run_idd"), "missing key run_id"),
    (lambda text: text.replace('[users]', '[users]\nchunk = 1'), "unknown key [users] chunk"),
    (lambda text: text.replace('[peers.party_b]', '[peers.party_z]'), "missing table [peers.party_b]"),
])
def test_cli_reports_config_errors(tmp_path: Path, mutate, message: str) -> None:
    table = tmp_path / "users.csv"
    table.write_text("email\na@x.com\n")
    config = party_a_config(tmp_path, {"table": str(table), "id_column": "email"})
    config.write_text(mutate(config.read_text()))
    result = run_party_a(config)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert str(config) in result.stderr


def test_cli_missing_config_file(tmp_path: Path) -> None:
    result = run_party_a(tmp_path / "absent.toml")
    assert result.returncode == 2 and "config file" in result.stderr and "absent.toml not found" in result.stderr


def test_toml_writer_roundtrip() -> None:
    import tomllib

    data = {"a": 1, "b": "x\"y", "c": [1.5, 2.0], "d": {"e": True, "f": {"g": ["h"]}}}
    assert tomllib.loads(to_toml(data)) == data


def test_config_error_type() -> None:
    assert issubclass(ConfigError, Exception) and ConfigError.exit_code == 2
