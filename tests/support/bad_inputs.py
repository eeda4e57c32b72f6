"""Broken copies of one valid run (story 1, tiny), each role's entry point run on each, and the check that it stopped
naming what is wrong: the cases of tests/unit/test_bad_inputs.py, which tests/unit/protocol/data/test_sql_tables.py
runs again through PostgreSQL."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from protocol.keys.keyfiles import Passphrase, seal, write_private
from scenarios.ecommerce_bank import BANK, SHOP
from scenarios.experiment import build_run
from scenarios.launch import ROOT, LocalRun, to_toml
from scenarios.synth import write_ecommerce_bank

A, B, C = "party_a", "party_b", "coordinator"
RUN_ID = "bad-inputs"


@dataclass(frozen=True)
class Case:
    name: str
    role: str
    breaks: Callable[[Path, dict], str | None]  # (the role's directory, its config as a dict): edits either, and
    # may return text to append to the config file as written
    expected: tuple[str, ...]  # substrings of the error line; "{config}" stands for the config file's path


def cell(path: str, row: int, column: str, value: str) -> Callable[[Path, dict], None]:
    """Set one cell (row counted from 1 over the data rows) of a CSV table in the role's directory."""
    def breaks(d: Path, cfg: dict) -> None:
        frame = pd.read_csv(d / path, dtype=str, keep_default_na=False)
        frame.loc[row - 1, column] = value
        frame.to_csv(d / path, index=False)
    return breaks


def table(path: str, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path, dict], None]:
    """Rewrite a CSV table in the role's directory with `edit` (all cells read as text)."""
    def breaks(d: Path, cfg: dict) -> None:
        edit(pd.read_csv(d / path, dtype=str, keep_default_na=False)).to_csv(d / path, index=False)
    return breaks


def setting(section: str, key: str, value: object) -> Callable[[Path, dict], None]:
    """Set `[section] key` (section "" for the top level, dotted for sub-tables); value None deletes the key."""
    def breaks(d: Path, cfg: dict) -> None:
        target = cfg
        for part in filter(None, section.split(".")):
            target = target.setdefault(part, {})
        if value is None:
            del target[key]
        else:
            target[key] = value
    return breaks


def file_text(path: str, text: str, mode: int = 0o600) -> Callable[[Path, dict], None]:
    """Replace a file in the role's directory with `text`, then set its mode."""
    def breaks(d: Path, cfg: dict) -> None:
        (d / path).unlink(missing_ok=True)
        write_private(d / path, text.encode())
        os.chmod(d / path, mode)
    return breaks


def chmod(path: str, mode: int) -> Callable[[Path, dict], None]:
    """Set the mode of a file in the role's directory."""
    return lambda d, cfg: os.chmod(d / path, mode)


def both(*steps: Callable[[Path, dict], None]) -> Callable[[Path, dict], None]:
    """The steps one after the other."""
    def breaks(d: Path, cfg: dict) -> None:
        for step in steps:
            step(d, cfg)
    return breaks


def sealed_key(passphrase: str, data: bytes = b"{}") -> Callable[[Path, dict], None]:
    """A coordinator key file for this run, sealed under `passphrase`."""
    def breaks(d: Path, cfg: dict) -> None:
        write_private(d / "work" / "keys" / f"{RUN_ID}.sealed", seal(data, Passphrase(passphrase.encode(), "test")))
    return breaks


USERS_A, ORDERS, ITEMS, USERS_B = "data/shop_users.csv", "data/orders.csv", "data/catalogue.csv", \
    "data/bank_customers.csv"

CASES = [
    # configs
    Case("toml_syntax", C, lambda d, cfg: "\n[oops\n", ("{config}", "is not valid TOML")),
    Case("missing_run_id", A, setting("", "run_id", None), ("{config}", "missing key run_id")),
    Case("unknown_top_key", B, setting("", "workdirr", "x"), ("{config}", "unknown key workdirr")),
    Case("unknown_train_key", A, setting("train", "epochz", 3), ("{config}", "unknown key [train] epochz")),
    Case("unknown_peer_key", A, setting("peers.party_b", "adress", "x"), ("{config}", "[peers.party_b] adress")),
    Case("wrong_type_timeout", B, setting("network", "peer_timeout", "soon"),
         ("{config}", "[network] peer_timeout: expected float, got str 'soon'")),
    Case("wrong_type_epochs", A, setting("train", "epochs", 2.5), ("{config}", "[train] epochs: expected int")),
    Case("not_positive_batch", A, setting("train", "batch_users", 0), ("{config}", "[train] batch_users: must be")),
    Case("bad_enum_encryption", B, setting("secure", "encryption", "fast"),
         ("{config}", "[secure] encryption: must be one of")),
    Case("bad_enum_id_kind", A, setting("users.ids", "kind", "fax"), ("{config}", "[users.ids] kind: must be one of")),
    Case("bad_key_bits", C, setting("key", "bits", 1000), ("{config}", "[key] bits: must be one of")),
    Case("negative_workers", B, setting("", "workers", -1), ("{config}", "workers: must be 0")),
    Case("listen_not_host_port", C, setting("network", "listen", "not-an-address"),
         ("{config}", "[network] listen", "not-an-address")),
    Case("listen_bad_port", A, setting("network", "listen", "127.0.0.1:99999"),
         ("{config}", "[network] listen", "99999")),
    Case("missing_passphrase", A, setting("tls", "passphrase_file", None),
         ("{config}", "[tls] passphrase_file: missing")),
    Case("unset_passphrase_env", B, both(setting("tls", "passphrase_file", None),
                                         setting("tls", "passphrase_env", "VFREC_NO_SUCH_VARIABLE")),
         ("{config}", "[tls] passphrase_env", "VFREC_NO_SUCH_VARIABLE")),
    Case("missing_peer_table", A, setting("peers", "party_b", None), ("{config}", "[peers.party_b]")),
    Case("peer_address_without_port", B, setting("peers.coordinator", "address", "localhost"),
         ("{config}", "[peers.coordinator] address", "'localhost'")),
    Case("missing_peer_address", C, setting("peers.party_a", "address", None),
         ("{config}", "missing key [peers.party_a] address")),
    Case("cert_not_found", A, setting("tls", "cert", "certs/nope.pem"), ("{config}", "[tls] cert", "nope.pem")),
    Case("log_not_numeric", B, setting("users", "log", ["age_band"]), ("{config}", "[users] log", "'age_band'")),
    # tables
    Case("users_table_missing", A, setting("users", "table", "data/nope.csv"), ("nope.csv", "not found")),
    Case("numeric_column_missing", B, table(USERS_B, lambda f: f.drop(columns=["tenure_years"])),
         ("bank_customers.csv", "column 'tenure_years' not found")),
    Case("empty_id", A, cell(USERS_A, 3, "customer_phone", ""), ("shop_users.csv", "'customer_phone' row 3", "empty")),
    Case("duplicated_id", B, table(USERS_B, lambda f: pd.concat([f, f.iloc[[4]]])),
         ("bank_customers.csv", "'phone'", "duplicated", "row 5")),
    Case("non_numeric_cell", B, cell(USERS_B, 5, "tenure_years", "lots"),
         ("bank_customers.csv", "'tenure_years' row 5 holds 'lots'")),
    Case("infinite_cell", B, cell(USERS_B, 7, "savings_rate", "inf"),
         ("bank_customers.csv", "'savings_rate' row 7 holds inf, not a finite number")),
    Case("empty_numeric_cell", B, cell(USERS_B, 2, "credit_limit", ""),
         ("bank_customers.csv", "'credit_limit' row 2 is empty")),
    Case("negative_in_log_column", B, cell(USERS_B, 6, "credit_limit", "-5"),
         ("bank_customers.csv", "'credit_limit' row 6 is negative (-5.0)")),
    Case("empty_category", B, cell(USERS_B, 4, "age_band", ""), ("bank_customers.csv", "'age_band' row 4 is empty")),
    Case("empty_item_category", A, cell(ITEMS, 9, "brand", ""), ("catalogue.csv", "'brand' row 9 is empty")),
    Case("duplicated_item", A, table(ITEMS, lambda f: pd.concat([f, f.iloc[[2]]])),
         ("catalogue.csv", "'sku'", "duplicated item IDs", "row 3")),
    Case("unknown_user", A, cell(ORDERS, 8, "customer_phone", "+1 (000) 000-0000"),
         ("orders.csv", "'customer_phone' row 8 names a user that is not in", "shop_users.csv")),
    Case("unknown_item", A, cell(ORDERS, 10, "sku", "SKU99999"),
         ("orders.csv", "'sku' row 10 names an item that is not in", "catalogue.csv")),
    Case("bad_timestamp", A, cell(ORDERS, 2, "timestamp", "yesterday-ish"),
         ("orders.csv", "'timestamp' row 2 holds 'yesterday-ish', neither a number nor a date")),
    Case("non_numeric_label", A, cell(ORDERS, 4, "rating", "five"), ("orders.csv", "'rating' row 4 holds 'five'")),
    Case("no_interactions", A, table(ORDERS, lambda f: f.iloc[:0]), ("orders.csv", "no interactions")),
    # keys
    Case("corrupt_tls_key", A, file_text("certs/party_a.key", "-----BEGIN ENCRYPTED PRIVATE KEY-----\ngarbage\n"),
         ("party_a.key", "cannot be decrypted")),
    Case("empty_tls_key", C, file_text("certs/coordinator.key", ""), ("coordinator.key", "cannot be decrypted")),
    Case("wrong_passphrase", B, file_text("passphrase", "not-the-passphrase\n"),
         ("party_b.key", "cannot be decrypted with the passphrase from", "passphrase")),
    Case("world_readable_key", C, chmod("certs/coordinator.key", 0o644),
         ("coordinator.key", "readable by others", "644")),
    Case("world_readable_passphrase", A, chmod("passphrase", 0o640), ("passphrase", "readable by others")),
    Case("empty_passphrase", B, file_text("passphrase", "\n"), ("passphrase", "is empty")),
    Case("ca_not_pem", A, file_text("certs/ca.pem", "not a certificate\n", 0o644), ("ca.pem", "PEM")),
    Case("corrupt_paillier_key", C, file_text(f"work/keys/{RUN_ID}.sealed", "{not json"),
         (f"{RUN_ID}.sealed", "is not a sealed key file")),
    Case("paillier_key_wrong_passphrase", C, sealed_key("another passphrase"),
         (f"{RUN_ID}.sealed", "cannot be opened with the passphrase from")),
    Case("paillier_key_under_the_tls_passphrase", C, setting("key", "passphrase_file", "passphrase"),
         ("{config}", "[key] passphrase_file", "is the [tls] key's too")),
]


@dataclass(frozen=True)
class Result:
    config: Path
    returncode: int
    stderr: str
    written: set[str]  # files that appeared in the work directory


def files(directory: Path) -> set[str]:
    """Every file under `directory`, relative to it (none when it does not exist)."""
    return {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()} if directory.exists() else set()


def run_case(base: LocalRun, case: Case, root: Path) -> Result:
    """The case's role run on a broken copy of its directory in `base`, made under `root`."""
    d = root / case.name / case.role
    shutil.copytree(base.dir(case.role), d)
    config = d / f"{case.role}.toml"
    cfg = tomllib.loads(config.read_text())
    extra = case.breaks(d, cfg) or ""
    config.write_text(to_toml(cfg) + "\n" + extra)
    before = files(d / "work")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VFREC")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    try:
        proc = subprocess.run([sys.executable, "-m", case.role, "--config", str(config)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired as exc:
        return Result(config, -1, f"still running after 30s: {exc.stderr}", files(d / "work") - before)
    return Result(config, proc.returncode, proc.stderr, files(d / "work") - before)


def run_cases(root: Path, cases: list[Case]) -> dict[str, Result]:
    """Each case run on a copy of one valid run (story 1, tiny) in `root`, all at once."""
    tables = write_ecommerce_bank(root / "valid" / A / "data", root / "valid" / B / "data", 100, 40, seed=5)
    base = build_run(root / "valid", tables, SHOP, BANK, RUN_ID, epochs=1, progress=False)
    with ThreadPoolExecutor(max_workers=max(2, min(8, os.cpu_count() or 2))) as pool:
        done = pool.map(lambda case: run_case(base, case, root), cases)
        return {case.name: result for case, result in zip(cases, done)}


def check_stopped(result: Result, case: Case) -> None:
    """The role exited with code 2 and one error line holding `case.expected`, and wrote nothing but its log."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if " ERROR " in line]
    assert len(errors) == 1 and errors[0] == lines[-1], result.stderr[-3000:]
    for text in case.expected:
        assert text.replace("{config}", str(result.config)) in errors[0], errors[0]
    assert result.written <= {f"{case.role}.log"}, f"{case.name} wrote {sorted(result.written)}"
    assert "listening" not in result.stderr  # it stopped before opening its endpoint
