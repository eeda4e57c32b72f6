"""What an operations team gets from an unattended run of three real processes: JSON log lines that parse and hold
no secret, progress as whole lines at most one per interval, and /metrics that show the work advance and a
killed peer go down."""

from __future__ import annotations

import csv
import json
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from protocol.crypto.paillier import read_private_key
from protocol.keys.keyfiles import read_passphrase_file
from protocol.roles import Role
from scenarios import ecommerce_bank
from scenarios.experiment import build_run, run_experiment
from scenarios.launch import LocalRun, observe_all, start, wait_all
from scenarios.synth import write_ecommerce_bank

pytestmark = pytest.mark.integration

EVERY = 2  # seconds between a bar's lines (VFREC_PROGRESS_SECONDS)
PROGRESS = re.compile(r"^(PSI|A alone|epoch \d+/\d+|recommend|refresh): .*?, (\d\d:\d\d) elapsed")
FIELDS = {"time", "level", "role", "logger", "message"}


class Scraper:
    """Scrapes every role's /metrics in a thread, every 0.2 s, keeping each scrape that answered."""

    def __init__(self, run: LocalRun):
        self.run, self.seen = run, {role: [] for role in run.observed}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            for role, seen in self.seen.items():
                try:
                    seen.append(self.run.scrape(role))
                except (OSError, urllib.error.URLError):
                    pass  # not up yet, or gone

    def __enter__(self) -> "Scraper":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def values(self, role: str, sample: str) -> list[float]:
        return [scrape[sample] for scrape in self.seen[role] if sample in scrape]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalRun, Scraper]:
    """Story 1, small, each role's output to a file with --log-format json, metrics on, scraped all along."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VFREC_PROGRESS_SECONDS", str(EVERY))
        run = ecommerce_bank.prepare(tmp_path_factory.mktemp("json"), users=600, epochs=2, seed=0, progress=True,
                                     batch_users=16)
        run.log_format = "json"
        observe_all(run)
        with Scraper(run) as scraper:
            run_experiment(run, 600, stream=False)
    return run, scraper


def log_lines(run: LocalRun, role: str) -> list[dict]:
    return [json.loads(line) for line in run.output(role).read_text().splitlines()]


def test_every_line_of_every_role_is_a_json_object_with_the_runs_context(scenario: tuple[LocalRun, Scraper]) -> None:
    run, _ = scenario
    for role in Role:
        text = run.output(role).read_text()
        assert "\r" not in text
        lines = log_lines(run, role)  # raises on a line that is not JSON
        assert len(lines) > 5 and all(FIELDS <= set(line) and line["role"] == role for line in lines), role
        assert {line["level"] for line in lines} <= {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
        in_run = [line for line in lines if "run_id" in line]
        assert len(in_run) >= len(lines) - 2, role  # all but the endpoint's start line, before the run is known
        assert all(line["run_id"] == "ecommerce-bank-0" and line["generation"] == 0 for line in in_run)
    trained = [line for line in log_lines(run, "party_b") if "step" in line]
    assert trained and {line["epoch"] for line in trained} <= {1, 2}
    assert any(line["message"].startswith("run finished") for line in log_lines(run, "party_a"))


def test_progress_lines_come_at_most_one_per_interval(scenario: tuple[LocalRun, Scraper]) -> None:
    run, _ = scenario
    bars: dict[tuple[str, str], list[int]] = {}
    for role in ("party_a", "party_b"):
        for line in log_lines(run, role):
            if line["logger"] == "vfrec.progress" and (match := PROGRESS.match(line["message"])):
                minutes, seconds = match[2].split(":")
                bars.setdefault((role, match[1]), []).append(int(minutes) * 60 + int(seconds))
    assert {("party_a", "PSI"), ("party_b", "PSI"), ("party_a", "A alone"), ("party_a", "epoch 1/2")} <= set(bars)
    for bar, times in bars.items():  # the last line is written on close, whenever that is
        assert all(later - earlier >= EVERY for earlier, later in zip(times, times[1:-1])), (bar, times)
    assert max(len(times) for times in bars.values()) > 2, "no bar ran long enough to show the interval"


def secrets_of(run: LocalRun) -> dict[str, str]:
    """What must never be logged: the coordinator's key (p and q, whole or their first 24 digits), every passphrase,
    and raw rows of both parties' tables (IDs as written and as digits, column values, an order with its rating)."""
    found: dict[str, str] = {}
    c = run.dir("coordinator")
    key = read_private_key(run.workdir("coordinator") / "keys" / "ecommerce-bank-0.sealed",
                           read_passphrase_file(c / "key_passphrase"))
    for name, prime in (("p", key.p), ("q", key.q)):
        found.update({f"key {name}": str(prime), f"key {name}, first digits": str(prime)[:24],
                      f"key {name} in hex": format(int(prime), "x")})
    for role in Role:
        found[f"{role}'s TLS passphrase"] = read_passphrase_file(run.dir(role) / "passphrase").value.decode()
    found["the Paillier key's passphrase"] = read_passphrase_file(c / "key_passphrase").value.decode()
    for table in ("party_b/data/bank_customers.csv", "party_a/data/orders.csv", "party_a/data/shop_users.csv"):
        path = run.root / table
        rows = list(csv.reader(path.open()))
        for n, row in enumerate(rows[1:4], start=1):
            found[f"{table} row {n}"] = ",".join(row)
            found[f"{table} row {n}: ID as digits"] = re.sub(r"\D", "", row[0])[-10:]
            found.update({f"{table} row {n}: {column}": value for column, value in zip(rows[0][1:], row[1:])
                          if len(value) >= 7})
        if table.endswith("orders.csv"):  # an order and its label: the user and the item with its rating
            user, sku, rating = rows[1][:3]
            found["a label: item and rating"] = f"{sku},{rating}"
    return found


def test_no_log_line_holds_a_secret(scenario: tuple[LocalRun, Scraper]) -> None:
    run, _ = scenario
    secrets = secrets_of(run)
    assert len(secrets) > 20
    for role in Role:
        for path in (run.output(role), run.workdir(role) / f"{role}.log"):
            text = path.read_text()
            digits = re.sub(r"\D", "", text)
            leaked = [what for what, value in secrets.items()
                      if value in text or (what.endswith("as digits") and value in digits)]
            assert not leaked, f"{path} holds {leaked}"


def test_metrics_show_secure_steps_advance_and_the_epochs_validation(scenario: tuple[LocalRun, Scraper]) -> None:
    run, scraper = scenario
    for role in ("party_a", "party_b"):
        steps = scraper.values(role, "vfrec_secure_steps_total")
        assert len(set(steps)) >= 3 and steps == sorted(steps), (role, steps)  # several values, never back
        users = scraper.values(role, "vfrec_secure_users_total")
        assert users[-1] >= 16 * steps[-1] - 16 * 2  # batches of 16 users, the last of an epoch may be smaller
        assert max(scraper.values(role, 'vfrec_peer_up{peer="coordinator"}')) == 1
    assert 2 in scraper.values("party_a", "vfrec_epoch")
    assert max(scraper.values("party_a", 'vfrec_progress_done{task="psi"}')) == \
        max(scraper.values("party_a", 'vfrec_progress_total{task="psi"}'))
    assert any(0 < v <= 1 for v in scraper.values("party_a", 'vfrec_validation{metric="ndcg@10"}'))
    assert max(scraper.values("coordinator", 'vfrec_decryptions_served_total{step="forward"}')) >= 2
    assert max(scraper.values("coordinator", "vfrec_checkpoint_age_seconds")) >= 0


def test_a_killed_peers_liveness_drops_at_both_others(tmp_path: Path) -> None:
    """B is killed mid-training; A and the coordinator wait for it ([checkpoint] rejoin, up to the peer timeout),
    and their metrics and /healthz say at once that it is down while the other peer is up."""
    tables = write_ecommerce_bank(tmp_path / "party_a" / "data", tmp_path / "party_b" / "data", 300, 40, seed=5)
    run = build_run(tmp_path, tables, {**ecommerce_bank.SHOP, "eval": {"negatives": 20}}, ecommerce_bank.BANK,
                    "killed", epochs=3, progress=False, batch_users=8, peer_timeout=8.0)
    observe_all(run)
    procs = {role: start(run, role) for role in Role}
    try:
        deadline = time.monotonic() + 120
        steps: list[float] = []
        while len(set(steps)) < 3:  # B's steps seen advancing
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs.values()), steps
            try:
                steps.append(run.scrape("party_b").get("vfrec_secure_steps_total", 0))
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        for role in ("party_a", "coordinator"):
            assert run.scrape(role)['vfrec_peer_up{peer="party_b"}'] == 1
        procs["party_b"].kill()  # SIGKILL: no goodbye
        procs["party_b"].wait()
        killed = time.monotonic()
        down: dict[str, float] = {}
        while len(down) < 2 and time.monotonic() - killed < 5:
            for role in ("party_a", "coordinator"):
                metrics = run.scrape(role)
                if role not in down and metrics['vfrec_peer_up{peer="party_b"}'] == 0:
                    down[role] = time.monotonic() - killed
                    other = "coordinator" if role == "party_a" else "party_a"
                    assert metrics[f'vfrec_peer_up{{peer="{other}"}}'] == 1
                    assert metrics['vfrec_peer_last_answer_seconds{peer="party_b"}'] > 0
            time.sleep(0.05)
        assert set(down) == {"party_a", "coordinator"}, down
        with urllib.request.urlopen(f"http://{run.observed['coordinator']}/healthz", timeout=2) as answer:
            health = json.loads(answer.read())
        assert health["status"] == "ok" and health["peers"] == {"party_a": True, "party_b": False}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
        wait_all(run, procs, timeout=10)

