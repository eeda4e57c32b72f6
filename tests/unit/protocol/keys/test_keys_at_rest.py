"""Private keys at rest: sealed under a passphrase, mode 0600, refused otherwise without a traceback; TLS keys
encrypted with scrypt; the coordinator's key reaches each of its own worker processes once, never with every task,
and never a Ray actor."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from coordinator import config as coordinator_config
from coordinator.decrypt import Decryptor, decryption_pool
from protocol.compute.workers import WorkerPool
from protocol.crypto.paillier import Encryptor, generate_keypair, load_or_create_private_key, read_private_key
from protocol.errors import ConfigError
from protocol.keys.certs import key_kdf, load_private_key, make_ca, strong_kdf
from protocol.keys.keyfiles import Passphrase, seal, write_private
from protocol.settings.config import Compute
from scenarios.launch import ROOT, write_local_run

RIGHT = Passphrase(b"right passphrase", "the test")
WRONG = Passphrase(b"wrong passphrase", "another test")


def test_paillier_key_is_sealed_and_opens_only_with_its_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "work" / "key.sealed"
    key, created = load_or_create_private_key(path, 1024, RIGHT)
    assert created and path.stat().st_mode & 0o777 == 0o600
    assert format(int(key.p), "x").encode() not in path.read_bytes()  # p and q are not in the clear
    again, created = load_or_create_private_key(path, 1024, RIGHT)
    assert not created and (again.p, again.q) == (key.p, key.q)
    with pytest.raises(ConfigError, match=f"{path} cannot be opened with the passphrase from another test"):
        read_private_key(path, WRONG)


def test_key_files_others_can_read_are_refused(tmp_path: Path) -> None:
    paillier = tmp_path / "key.sealed"
    load_or_create_private_key(paillier, 1024, RIGHT)
    make_ca(tmp_path / "ca", RIGHT)
    tls = tmp_path / "ca" / "ca.key"
    assert load_private_key(tls, RIGHT) is not None
    for path, load in ((paillier, read_private_key), (tls, load_private_key)):
        path.chmod(0o644)
        with pytest.raises(ConfigError, match=f"{path} is readable by others \\(mode 644\\)"):
            load(path, RIGHT)


def test_tls_keys_are_written_encrypted(tmp_path: Path) -> None:
    make_ca(tmp_path, RIGHT)
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "ca.key").read_bytes()
    with pytest.raises(ConfigError, match="cannot be decrypted with the passphrase from another test"):
        load_private_key(tmp_path / "ca.key", WRONG)


def test_tls_keys_are_encrypted_with_scrypt_and_a_weakly_encrypted_one_is_flagged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _, ca_key = make_ca(tmp_path, RIGHT)
    written = (tmp_path / "ca.key").read_bytes()
    assert key_kdf(written) == f"scrypt N={2**14} r=8 p=1" and strong_kdf(key_kdf(written))
    with caplog.at_level(logging.WARNING):
        assert load_private_key(tmp_path / "ca.key", RIGHT).private_numbers() == ca_key.private_numbers()
    assert not caplog.records
    weak = ca_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.BestAvailableEncryption(RIGHT.value))  # PBKDF2, 2,048 iterations
    write_private(tmp_path / "weak.key", weak)
    assert key_kdf(weak) == "pbkdf2 2048 iterations" and not strong_kdf(key_kdf(weak))
    with caplog.at_level(logging.WARNING):
        load_private_key(tmp_path / "weak.key", RIGHT)
    assert "weak.key is encrypted with pbkdf2 2048 iterations" in caplog.text and "-scrypt" in caplog.text


def test_coordinator_with_a_wrong_passphrase_exits_2_naming_the_file(tmp_path: Path) -> None:
    run = write_local_run(tmp_path, {})
    key_file = coordinator_config.load(run.configs["coordinator"]).key_file
    write_private(key_file, seal(generate_keypair(1024).to_json().encode(), WRONG))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(run.command("coordinator"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    key_passphrase = run.dir("coordinator") / "key_passphrase"  # the Paillier key's own, not the TLS key's
    assert f"{key_file} cannot be opened with the passphrase from {key_passphrase}" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_workers_get_the_key_once_and_tasks_name_only_its_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_keypair(1024)
    enc = Encryptor(key.public)
    values = list(range(100, 112))
    with WorkerPool(2) as pool:
        sent: list[tuple] = []
        submit = pool.submit
        monkeypatch.setattr(pool, "submit", lambda op, *args: sent.append((op, args)) or submit(op, *args))
        decryptor = Decryptor(key, pool)
        assert decryptor.decrypt([enc.encrypt(v) for v in values]) == values
        assert decryptor.decrypt([enc.encrypt(v) for v in values[::-1]]) == values[::-1]
    assert len(sent) == 4 and {op for op, _ in sent} == {"protocol.crypto.paillier:decrypt_task"}
    assert all(args[0] == key.public.fingerprint for _, args in sent)
    assert not any(format(int(key.p), "x") in repr(args) or str(int(key.p)) in repr(args) for _, args in sent)


class RemoteWorker:
    """A worker that is not a child process of the coordinator (as a Ray actor is); it records what reaches it."""

    name = "remote worker"

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def exchange(self, frame: bytes) -> bytes | None:
        self.frames.append(frame)
        return None

    def stop(self) -> None:
        pass


def test_the_coordinator_key_never_goes_to_a_remote_worker() -> None:
    remote = RemoteWorker()
    with WorkerPool(workers=[remote]) as pool:
        with pytest.raises(ConfigError, match="only to its own worker processes"):
            Decryptor(generate_keypair(1024), pool)
    assert remote.frames == []


def test_the_coordinator_decrypts_on_local_processes_when_its_config_asks_for_ray(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="coordinator.decrypt"):
        with decryption_pool(Compute("ray", 1, "127.0.0.1:1")) as pool:  # no cluster there: Ray is never asked
            assert pool.local and pool.size == 1
            key = generate_keypair(1024)
            cts = [Encryptor(key.public).encrypt(m) for m in range(4)]
            assert Decryptor(key, pool).decrypt(cts) == [key.raw_decrypt(c) for c in cts]
    assert "not used by the coordinator" in caplog.text
