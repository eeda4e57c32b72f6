"""Bad networks and crashes with three real processes: A and B talk through fault-injecting proxies
(scenarios/proxy.py).

Each run is story 1 at a tiny size (60 shared users, batches of 20, one epoch) with a short peer timeout. A's and
B's addresses of each other point at a proxy in this process, one per direction; TLS passes through it untouched
(the certificate name stays the role's).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from scenarios.ecommerce_bank import BANK, SHOP
from scenarios.experiment import build_run
from scenarios.launch import LocalRun, Outcome, start, wait_all
from scenarios.proxy import Proxy, route_through_proxy
from scenarios.synth import write_ecommerce_bank

pytestmark = pytest.mark.integration
PEER_TIMEOUT = 6.0
ROLES = ("coordinator", "party_a", "party_b")


def fault_run(root: Path, peer_timeout: float = PEER_TIMEOUT) -> LocalRun:
    tables = write_ecommerce_bank(root / "party_a" / "data", root / "party_b" / "data", 100, 40, seed=5)
    shop = {**SHOP, "eval": {"negatives": 20}}
    return build_run(root, tables, shop, BANK, "faults", epochs=1, progress=False, batch_users=20,
                     peer_timeout=peer_timeout)


def wait_for_line(run: LocalRun, role: str, text: str, procs: dict[str, subprocess.Popen], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in run.output(role).read_text(errors="replace"):
        assert time.monotonic() < deadline, f"{role} never logged {text!r}"
        assert all(p.poll() is None for p in procs.values()), "a role stopped before the fault was injected"
        time.sleep(0.1)


def run_with_fault(root: Path, fault: Callable[[Proxy], None], peer_timeout: float = PEER_TIMEOUT) \
        -> tuple[dict[str, Outcome], float, list[Proxy]]:
    """Run with A↔B through proxies; once training starts, apply `fault` to both directions' proxies.
    Returns the outcomes, the seconds from the fault to the last exit, and the proxies."""
    run = fault_run(root, peer_timeout)
    proxies = [route_through_proxy(run, "party_a", "party_b"), route_through_proxy(run, "party_b", "party_a")]
    try:
        procs = {role: start(run, role) for role in ROLES}
        wait_for_line(run, "party_a", "training on", procs, timeout=120)
        injected = time.monotonic()
        for proxy in proxies:
            fault(proxy)
        out = wait_all(run, procs, timeout=180)
        return out, time.monotonic() - injected, proxies
    finally:
        for proxy in proxies:
            proxy.close()


def trained(out: dict[str, Outcome]) -> bool:
    return "model" in out["party_a"].output and "stored" in out["party_b"].output


def last_line(outcome: Outcome) -> str:
    return outcome.output.strip().splitlines()[-1]


def test_a_partition_shorter_than_the_peer_timeout_is_survived(tmp_path: Path) -> None:
    out, _, proxies = run_with_fault(tmp_path, lambda p: p.partition(2.0))
    assert all(o.returncode == 0 for o in out.values()), {r: o.output[-2000:] for r, o in out.items()}
    assert trained(out)
    assert all(p.connections > 0 for p in proxies)  # the traffic did go through the proxies


def test_a_partition_longer_than_the_peer_timeout_stops_every_role_naming_the_peer(tmp_path: Path) -> None:
    out, seconds, _ = run_with_fault(tmp_path, lambda p: p.partition(60.0))
    assert all(o.returncode != 0 for o in out.values()), {r: o.output[-2000:] for r, o in out.items()}
    assert "party_b" in last_line(out["party_a"]) and "stopped answering for 6s" in last_line(out["party_a"])
    assert "party_a" in last_line(out["party_b"])
    assert "party_b" in last_line(out["coordinator"]) or "party_a" in last_line(out["coordinator"])
    # noticed after the peer timeout, then each waits one more for the lost peer to come back ([checkpoint] rejoin)
    assert PEER_TIMEOUT - 1 < seconds < 2 * PEER_TIMEOUT + 10


def test_a_slow_network_still_completes(tmp_path: Path) -> None:
    out, _, _ = run_with_fault(tmp_path, lambda p: p.delay(0.05))
    assert all(o.returncode == 0 for o in out.values()), {r: o.output[-2000:] for r, o in out.items()}
    assert trained(out)


def test_dropped_connections_are_reopened_and_the_run_completes(tmp_path: Path) -> None:
    out, _, proxies = run_with_fault(tmp_path, lambda p: p.drop())
    assert all(o.returncode == 0 for o in out.values()), {r: o.output[-2000:] for r, o in out.items()}
    assert trained(out)
    assert all(p.connections >= 2 for p in proxies)  # each direction connected again after the drop


def test_a_killed_peer_is_noticed_at_once_and_waited_for_until_the_peer_timeout(tmp_path: Path) -> None:
    """A and the coordinator notice B's death at once (its port refuses connections), roll back and wait for it
    ([checkpoint] rejoin); B is not restarted, so after the peer timeout they stop naming it."""
    run = fault_run(tmp_path, peer_timeout=12.0)
    procs = {role: start(run, role) for role in ROLES}
    wait_for_line(run, "party_a", "checkpoint at step 0 held by all three", procs, timeout=120)
    killed = time.monotonic()
    procs["party_b"].kill()  # SIGKILL: no goodbye to anyone
    procs["party_b"].wait()
    survivors = {role: procs[role] for role in ("party_a", "coordinator")}
    for role in survivors:
        wait_for_line(run, role, "rolling back", survivors, timeout=30)
    noticed = time.monotonic() - killed
    for role in survivors:
        procs[role].wait(timeout=60)
    seconds = time.monotonic() - killed
    out = wait_all(run, procs, timeout=10)
    assert noticed < 8, f"A and the coordinator took {noticed:.1f}s to notice (peer_timeout 12s)"
    assert 12 - 1 < seconds < 12 + 10
    assert out["party_a"].returncode != 0 and out["coordinator"].returncode != 0
    assert "party_b did not come back within 12s" in last_line(out["party_a"])  # after B's refusal or C's resume
    assert "party_b" in last_line(out["coordinator"])
