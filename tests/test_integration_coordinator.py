"""A real coordinator process decrypts masked values for the role a step names, and no one else."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from protocol.crypto import packing
from protocol.runtime import config
from protocol.net.certs import make_role_cert, new_ca
from protocol.net.codec import BigInts
from protocol.runtime.config import PeerConfig
from protocol.layer.decryption import DONE_TAG, decrypt_masked, receive_public_key, request_decryption
from protocol.errors import PeerError, ProtocolError
from protocol.crypto.paillier import Encryptor
from protocol.net.transport import Endpoint
from scenarios.launch import free_ports, start, wait_all, write_local_run

pytestmark = pytest.mark.integration


def endpoint_for(config_path: Path, role: str) -> Endpoint:
    root = config.load(config_path)
    return Endpoint(config.read_network(root, role, ("party_b" if role == "party_a" else "party_a", "coordinator")))


def test_decryption_service(tmp_path: Path) -> None:
    ca = new_ca()  # the run's CA, kept here so the test can issue an outsider's certificate from it
    run = write_local_run(tmp_path, {}, peer_timeout=30, ca=ca)
    assert not list(tmp_path.rglob("ca.key")), "the CA's key must not be left in the run directory"
    coordinator = start(run, "coordinator")
    a = endpoint_for(run.configs["party_a"], "party_a").start()
    b = endpoint_for(run.configs["party_b"], "party_b").start()
    try:
        public = receive_public_key(a, None)
        assert receive_public_key(b, public.fingerprint).n == public.n
        assert public.bits == 2048
        enc = Encryptor(public)
        layout = packing.Layout.fit(16, 96, public)
        values = np.random.default_rng(0).integers(-(2**40), 2**40, size=(5, 16)).astype(object)
        u = packing.encrypt(enc, values, layout, 0, 2**40)

        # the right role gets the right values back, through a mask
        assert (decrypt_masked(a, "forward", "e0/b0", u, enc) == values).all()

        # the other party may not ask for A's step
        with pytest.raises(ProtocolError, match="party_b may not ask for decryptions of step 'forward'"):
            request_decryption(b, "forward", "e0/b0", packing.mask(u, enc)[0].flat())

        # malformed ciphertexts are refused, naming the first bad one
        a.send("coordinator", "coordinator/decrypt/forward/bad", {"ciphertexts": BigInts([u.flat()[0], 0])})
        reply = a.recv("coordinator", "coordinator/decrypted/forward/bad")
        assert "ciphertext 1: ciphertext out of range" in reply["error"]

        # a third party with a certificate from the same CA is not a peer of the coordinator
        certs = run.root / "eve"
        make_role_cert(certs, "eve", *ca, a.cfg.key_passphrase)
        c_addr = config.load(run.configs["party_a"]).data["peers"]["coordinator"]["address"]
        eve_cfg = dataclasses.replace(a.cfg, role="eve", listen=f"127.0.0.1:{free_ports(1)[0]}",
                                      cert=certs / "eve.pem", key=certs / "eve.key",
                                      peers={"coordinator": PeerConfig("coordinator", c_addr, "coordinator",
                                                                       a.cfg.ca, None)})
        with Endpoint(eve_cfg) as eve:
            with pytest.raises(PeerError, match="is not one of its configured peers"):
                request_decryption(eve, "forward", "e0/b0", packing.mask(u, enc)[0].flat())

        a.send("coordinator", DONE_TAG, None)
        out = wait_all(run, {"coordinator": coordinator}, timeout=30)
        assert out["coordinator"].returncode == 0, out["coordinator"].output
    finally:
        a.close()
        b.close()
        if coordinator.poll() is None:
            coordinator.kill()

    audit = [json.loads(line) for line in (run.workdir("coordinator") / "audit.jsonl").read_text().splitlines()]
    assert [(e["who"], e["step"], e["count"], "refused" in e) for e in audit] == [
        ("party_a", "forward", 5, False), ("party_b", "forward", 5, True), ("party_a", "forward", 2, True)]
    assert all(e["run"] == "local" and e["tag"].startswith("coordinator/decrypt/") for e in audit)
    assert (run.workdir("coordinator") / "audit.jsonl").stat().st_mode & 0o777 == 0o600
