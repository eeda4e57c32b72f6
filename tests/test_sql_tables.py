"""Tables read from PostgreSQL (the cluster tests/conftest.py starts): the same checks and messages as for files.

Every case of tests/test_bad_inputs.py that breaks a table's contents runs again with the role's tables copied
into the database and its config reading them from there; the message is the file case's with the file named as
the SQL source. A row of a query is its row in the query's result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import party_a.config as party_a_config
import party_b.config as party_b_config
from party_a.data.tables import load_tables
from protocol.crypto.keyfiles import write_private
from protocol.data.tables import Features, TableSpec, encode_features, read_table
from protocol.errors import ConfigError
from protocol.runtime.config import Table
from psi.ids import Normalizer, stream_ids
from scenarios import ecommerce_bank
from scenarios.experiment import run_experiment
from scenarios.launch import free_ports
from scenarios.postgres import load_file, to_postgres
from tests.conftest import Postgres
from tests.test_bad_inputs import CASES, ORDERS, Case, Result, both, cell, check_stopped, run_cases

CONTENT = ["numeric_column_missing", "empty_id", "duplicated_id", "non_numeric_cell", "infinite_cell",
           "empty_numeric_cell", "negative_in_log_column", "empty_category", "empty_item_category", "duplicated_item",
           "unknown_user", "unknown_item", "bad_timestamp", "non_numeric_label", "no_interactions"]
SOURCE = ["wrong_password", "unreachable_server", "missing_table", "bad_timestamp_in_query"]
STEMS = ("shop_users", "orders", "catalogue", "bank_customers")
WRONG_PASSWORD = "not-the-password-4711"
FAST = {"progress": False, "batch_users": 16, "lr": 0.01, "tower": {"lr": 0.01}}


def in_postgres(pg: Postgres, schema: str, url: str | None = None) -> Callable[[Path, dict], None]:
    """A `breaks` step: the role's tables copied into `schema`, its config reading them from there (through `url`
    when given: the tables stay in the test cluster)."""
    def breaks(d: Path, cfg: dict) -> None:
        cfg.update(to_postgres(cfg, lambda path: d / path, pg.url, pg.password_file, schema))
        for section in cfg.values():
            if url and isinstance(section, dict) and isinstance(section.get("table"), dict):
                section["table"]["url"] = url
    return breaks


def table_entry(section: str, **entry: str) -> Callable[[Path, dict], None]:
    """A `breaks` step: change keys of `[section] table` (a key set to "" is removed)."""
    def breaks(d: Path, cfg: dict) -> None:
        table = cfg[section]["table"]
        table.update(entry)
        for key in [k for k, v in table.items() if v == ""]:
            del table[key]
    return breaks


def sql_cases(pg: Postgres) -> dict[str, Case]:
    """The content cases of tests/test_bad_inputs.py through PostgreSQL, and failures of the source itself."""
    cases = {}
    for name in CONTENT:
        case = next(c for c in CASES if c.name == name)
        expected = []
        for text in case.expected:
            for stem in STEMS:
                text = text.replace(f"{stem}.csv", f"{pg.url} table {name}.{stem}")
            expected.append(text)
        cases[name] = Case(name, case.role, both(case.breaks, in_postgres(pg, name)), tuple(expected))
    closed = f"postgresql://vfrec@127.0.0.1:{free_ports(1)[0]}/postgres"
    cases["wrong_password"] = Case("wrong_password", "party_b", both(
        in_postgres(pg, "wrong_password"), lambda d, cfg: write_private(d / "pg_password", WRONG_PASSWORD.encode()),
        table_entry("users", password_file="pg_password")),
        (f"{pg.url} table wrong_password.bank_customers cannot be read", "password authentication failed"))
    cases["unreachable_server"] = Case("unreachable_server", "party_b", in_postgres(pg, "unreachable_server", closed),
                                       (f"{closed} table unreachable_server.bank_customers cannot be read",
                                        "Connection refused"))
    cases["missing_table"] = Case("missing_table", "party_b", both(
        in_postgres(pg, "missing_table"), table_entry("users", name="missing_table.nope")),
        (f"{pg.url} table missing_table.nope cannot be read", 'relation "missing_table.nope" does not exist'))
    # the broken row, the file's second, sorts last: named as the query result's last row
    cases["bad_timestamp_in_query"] = Case("bad_timestamp_in_query", "party_a", both(
        cell(ORDERS, 2, "timestamp", "yesterday-ish"), in_postgres(pg, "q"),
        table_entry("interactions", name="", query='SELECT * FROM q.orders ORDER BY "timestamp"')),
        (f"{pg.url} query 'SELECT * FROM q.orders ORDER BY \"timestamp\"': column 'timestamp' row {{rows}} holds "
         "'yesterday-ish', neither a number nor a date",))
    return cases


@pytest.fixture(scope="module")
def sql_results(tmp_path_factory: pytest.TempPathFactory, postgres: Postgres) -> tuple[dict[str, Case],
                                                                                      dict[str, Result]]:
    cases = sql_cases(postgres)
    return cases, run_cases(tmp_path_factory.mktemp("bad_sql_inputs"), list(cases.values()))


@pytest.mark.parametrize("name", CONTENT + SOURCE)
def test_bad_table_in_postgres_stops_the_role_naming_the_source(sql_results: tuple, postgres: Postgres,
                                                                name: str) -> None:
    cases, results = sql_results
    result = results[name]
    case = cases[name]
    if any("{rows}" in e for e in case.expected):  # the query result's last row
        rows = str(len(pd.read_csv(result.config.parent / ORDERS)))
        case = dataclasses.replace(case, expected=tuple(e.replace("{rows}", rows) for e in case.expected))
    check_stopped(result, case)
    password = postgres.password_file.read_text().strip()
    log = (result.config.parent / "work" / f"{case.role}.log").read_text()
    assert password not in result.stderr + log and WRONG_PASSWORD not in result.stderr + log


def source_table(entry: dict, file: Path = Path("/etc/vfrec/party.toml")) -> Table:
    return Table({"table": entry, "id_column": "id"}, file, "users")


@pytest.mark.parametrize("entry, message", [
    ({"url": "postgresql://u:secret@h:5432/d", "name": "t"}, "[users.table] url: holds a password"),
    ({"url": "postgresql://u@h:5432/d?password=secret", "name": "t"}, "[users.table] url: holds a password"),
    ({"url": "mysql://u@h/d", "name": "t"}, "[users.table] url: expected a PostgreSQL URL"),
    ({"url": "postgresql://u@h/d"}, "[users.table] query: missing: give exactly one of query and name"),
    ({"url": "postgresql://u@h/d", "name": "t", "query": "SELECT 1"}, "[users.table] query: both given"),
    ({"url": "postgresql://u@h/d", "name": "a.b.c"}, "[users.table] name: expected table or schema.table"),
    ({"url": "postgresql://u@h/d", "query": " ; "}, "[users.table] query: is empty"),
    ({"url": "postgresql://u@h/d", "name": "t", "pasword_file": "x"}, "unknown key [users.table] pasword_file"),
    ({"url": "postgresql://u@h/d", "name": "t", "password_file": "x", "password_env": "X"},
     "[users.table] password_file: both given: give at most one of password_file and password_env"),
    ({"url": "postgresql://u@h/d", "name": "t", "password_env": "VFREC_NO_SUCH_VARIABLE"},
     "[users.table] password_env: environment variable VFREC_NO_SUCH_VARIABLE is unset or empty"),
])
def test_a_bad_sql_source_entry_names_its_key(entry: dict, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        TableSpec.from_config(source_table(entry))
    assert message in str(raised.value) and "secret" not in str(raised.value)


def test_a_source_is_named_by_its_url_and_its_query_shortened() -> None:
    query = "SELECT id FROM events WHERE kind = 'order' AND amount > 0 ORDER BY id"
    spec = TableSpec.from_config(source_table({"url": "postgresql://u@h:5/d?sslmode=require", "query": query}))
    shown = "SELECT id FROM events WHERE kind = 'order' AND amount > 0..."
    assert str(spec.path) == f'postgresql://u@h:5/d query "{shown}"'
    named = TableSpec.from_config(source_table({"url": "postgresql://u@h:5/d", "name": "shop.Users"}))
    assert str(named.path) == "postgresql://u@h:5/d table shop.Users"
    assert named.path.query == 'SELECT * FROM "shop"."Users"'


def test_a_query_is_read_in_its_order_with_types_as_from_a_file(tmp_path: Path, postgres: Postgres) -> None:
    frame = pd.DataFrame({"id": ["u3", "u1", "", "u2"], "n": [3, 1, 4, 2], "x": [0.5, np.inf, np.nan, -2.0],
                          "kind": ["a", "b", "", "NA"],
                          "when": ["2025-01-02 10:00:00", "2025-01-01 00:00:00", "1970-01-02 00:00:00", ""]})
    frame.to_csv(tmp_path / "sample.csv", index=False)
    load_file(postgres.url, postgres.password_file, tmp_path / "sample.csv", "reading")
    entry = {"url": postgres.url, "password_file": str(postgres.password_file),
             "query": "SELECT id, n, x, kind, \"when\"::timestamp AS \"when\" FROM reading.sample ORDER BY n DESC"}
    got = read_table(TableSpec.from_config(source_table(entry)).path, ["kind", "id", "x", "when"], ["id"])
    assert got["id"].tolist() == ["", "u3", "u2", "u1"] and got.index.tolist() == [0, 1, 2, 3]
    assert list(got.columns) == ["kind", "id", "x", "when"]
    assert got["x"].tolist()[1:] == [0.5, -2.0, np.inf] and np.isnan(got["x"].iloc[0])
    assert got["kind"].tolist()[1:] == ["a", "NA", "b"] and pd.isna(got["kind"].iloc[0])
    assert got["when"].tolist()[:2] == [86400.0, pd.Timestamp("2025-01-02 10:00", tz="UTC").timestamp()]
    assert np.isnan(got["when"].iloc[2])


def test_ids_from_a_query_are_the_files_ids_whether_text_or_not(tmp_path: Path, postgres: Postgres) -> None:
    """PSI reads a text ID column from the server's Arrow batches, any other type as the file reader does: the
    same normalised IDs as from the CSV file either way, in the query's order."""
    frame = pd.DataFrame({"email": [" Ann@Example.com", "bo@x.org", "Ｃy@x.org", "d\u00e9@x.org"],
                          "number": [5.0, 12.5, 7.0, 300.0]})
    frame.to_csv(tmp_path / "ids.csv", index=False)
    load_file(postgres.url, postgres.password_file, tmp_path / "ids.csv", "ids")
    for column, normalizer in (("email", Normalizer(kind="email")), ("number", Normalizer())):
        entry = {"url": postgres.url, "password_file": str(postgres.password_file), "name": "ids.ids"}
        source = TableSpec.from_config(source_table(entry)).path
        from_sql = list(stream_ids(source, column, normalizer, chunk_rows=3))
        assert from_sql == list(stream_ids(tmp_path / "ids.csv", column, normalizer, chunk_rows=3)), column
    assert from_sql == ["5.0", "12.5", "7.0", "300.0"]  # Arrow's cast would give "5", "7", "300"


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
