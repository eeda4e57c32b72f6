"""Story 1 read from PostgreSQL (the cluster tests/conftest.py starts) through three processes: the same tables,
columns and report as from the files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import party_a.config as party_a_config
import party_b.config as party_b_config
from party_a.data.tables import load_tables
from protocol.data.tables import Features, encode_features
from scenarios import ecommerce_bank
from scenarios.experiment import run_experiment
from tests.support.postgres import Postgres

FAST = {"progress": False, "batch_users": 16, "lr": 0.01, "tower": {"lr": 0.01}}


def a_loaded(config: Path) -> tuple:
    """What party A reads from its tables before PSI: its users' IDs and everything `load_tables` builds."""
    cfg = party_a_config.load(config)
    frame, ids = cfg.users.stream()
    tables = load_tables(frame, ids, cfg.users.table, cfg.users.normalizer, cfg.training.interactions,
                         cfg.training.items)
    histories = [tables.histories[u].tolist() for u in range(len(ids))]
    return list(ids), tables.items, tables.user_features, tables.item_features, histories, tables.item_counts.tolist()


def b_loaded(config: Path) -> tuple:
    """What party B reads: its users' IDs and their encoded columns."""
    cfg = party_b_config.load(config)
    frame, ids = cfg.users.stream()
    return list(ids), encode_features(frame, cfg.users.table)


@pytest.mark.integration
def test_story_1_from_postgres_gives_the_report_it_gives_from_files(tmp_path: Path, postgres: Postgres) -> None:
    """Both parties read every table from PostgreSQL, then from the files: the loaded tables and encoded columns are
    equal bit for bit, and so is the report, but for the federated model's last digits. The shared order depends
    on the IDs alone and the coordinator draws W0 from the scenario's seed; what stays random is the rounding of W'
    at every refresh (its low bits masked from A by M''), so the federated numbers may differ by rounding."""
    files = ecommerce_bank.prepare(tmp_path / "files", users=200, epochs=1, seed=0, **FAST)
    sql = ecommerce_bank.prepare(tmp_path / "sql", users=200, epochs=1, seed=0, from_postgres=postgres.url,
                                 postgres_password_file=postgres.password_file, **FAST)
    assert all("postgresql://" in sql.configs[role].read_text() for role in ("party_a", "party_b"))
    from_files, from_sql = a_loaded(files.configs["party_a"]), a_loaded(sql.configs["party_a"])
    assert_same(from_files, from_sql)
    bank_files, bank_sql = b_loaded(files.configs["party_b"]), b_loaded(sql.configs["party_b"])
    assert_same(bank_files, bank_sql)
    report = run_experiment(sql, 300, stream=False)
    assert report["shared_users"] == len(set(from_files[0]) & set(bank_files[0])) == 120
    assert_same_report(run_experiment(files, 300, stream=False), report)


RUN_SPECIFIC = ("timing", "wall_seconds", "model.id", "plan.key_fingerprint")  # and every "...seconds"


def assert_same_report(files: dict, sql: dict) -> None:
    """Every entry of two reports equal, leaving out times and the run's own names; the federated model's numbers
    within rounding: its loss to 1e-4, a metric by at most one validation user's hit."""
    flat_files, flat_sql = flatten(files), flatten(sql)
    assert flat_files.keys() == flat_sql.keys()
    close = 1 / files["validation_users"]
    for path, value in flat_files.items():
        if path.startswith(RUN_SPECIFIC) or path.endswith("seconds"):
            continue
        other = flat_sql[path]
        if ".federated" in path and isinstance(value, float):
            limit = 1e-4 * abs(value) if ".loss." in path else close
            assert abs(value - other) <= limit, (path, value, other)
        else:
            assert value == other, (path, value, other)


def flatten(tree: object, path: str = "") -> dict[str, object]:
    """A nested report as {dotted path: leaf}, list items by index."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else None
    if items is None:
        return {path: tree}
    return {k: v for key, sub in items for k, v in flatten(sub, f"{path}.{key}" if path else str(key)).items()}


def assert_same(a: object, b: object) -> None:
    """Equal, arrays and `Features` compared element by element (bit for bit)."""
    if isinstance(a, (tuple, list)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, Features):
        for field in dataclasses.fields(Features):
            assert_same(getattr(a, field.name), getattr(b, field.name))
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    else:
        assert a == b
