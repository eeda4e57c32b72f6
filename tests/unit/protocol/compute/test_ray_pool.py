"""The Ray backend in one process against a local Ray cluster: the same tasks give the same answers as inline.

The cluster (a head and one more node, both on loopback) starts once for this module.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.decrypt import Decryptor
from protocol.compute.pool import open_pool
from protocol.compute.workers import WorkerPool
from protocol.crypto.paillier import generate_keypair
from protocol.errors import ConfigError, ProtocolError
from protocol.settings import config
from protocol.settings.config import Compute
from psi.ecdh import blind_ids, new_secret, reblind
from scenarios.ray_cluster import local_cluster

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="the ray extra is not installed")


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    with local_cluster(head_cpus=1, worker_nodes=1) as addr:
        yield addr


@pytest.fixture(scope="module")
def pool(address: str) -> Iterator[WorkerPool]:
    with open_pool(Compute("ray", None, address, max_in_flight=3)) as p:
        yield p


def test_one_worker_per_cpu_of_the_cluster(pool: WorkerPool) -> None:
    assert pool.size == 2 and pool.max_in_flight == 3


def test_psi_tasks_match_inline(pool: WorkerPool) -> None:
    salt, a, b = b"s" * 32, new_secret(), new_secret()
    chunks = [[f"user{i}.{j}@example.com" for j in range(50)] for i in range(6)]
    blinded = pool.map("psi.ecdh:blind_ids", [(c, salt, a) for c in chunks])
    assert blinded == [blind_ids(c, salt, a) for c in chunks]
    assert pool.map("psi.ecdh:reblind", [(p, b) for p in blinded]) == [reblind(p, b) for p in blinded]


def test_the_decryption_key_is_never_installed_on_an_actor(pool: WorkerPool) -> None:
    assert not pool.local
    with pytest.raises(ConfigError, match="only to its own worker processes"):
        Decryptor(generate_keypair(1024), pool)


def test_errors_and_foreign_functions_are_refused(pool: WorkerPool) -> None:
    with pytest.raises(ProtocolError, match="not a multiple of 32"):
        pool.submit("psi.ecdh:reblind", b"x" * 33, new_secret()).result()
    with pytest.raises(ProtocolError, match="not a function of protocol/ or psi/"):
        pool.submit("os:system", "true").result()


def test_submit_waits_while_max_in_flight_tasks_are_unfinished(pool: WorkerPool) -> None:
    chunk = ([f"id{j}" for j in range(2000)], b"s" * 32, new_secret())  # about 0.1 s of work each
    futures = [pool.submit("psi.ecdh:blind_ids", *chunk) for _ in range(3)]
    assert not any(f.done() for f in futures)
    futures.append(pool.submit("psi.ecdh:blind_ids", *chunk))
    assert any(f.done() for f in futures[:3]), "a fourth task was accepted with three unfinished"
    assert len({f.result() for f in futures}) == 1


@pytest.mark.parametrize("text, message", [
    ('[compute]\nbackend = "ray"\n', "address: required"),
    ('[compute]\naddress = "auto"\n', 'only with backend = "ray"'),
    ('[compute]\nbackend = "spark"\n', "must be one of 'local', 'ray'"),
    ('[compute]\nmax_in_flight = 0\n', "must be positive"),
    ('[compute]\nworker = 2\n', r"unknown key \[compute\] worker"),
])
def test_bad_compute_sections(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        config.read_compute(config.load(path))


def test_local_backend_is_the_default(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("workers = 0\n")
    compute = config.read_compute(config.load(path))
    assert compute == Compute("local", 0, "", None)
    with open_pool(compute) as inline:
        assert inline.size == 0
