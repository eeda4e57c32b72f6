"""A real coordinator process decrypts masked values for the role a step names, and no one else."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from protocol import messages
from protocol.crypto import packing
from protocol.crypto.paillier import Encryptor, PublicKey
from protocol.errors import PeerError, ProtocolError
from protocol.layer.decryption import (
    Step,
    decrypt_masked,
    eval_label,
    receive_public_key,
    register_layer,
    request_decryption,
    train_label,
)
from protocol.layer.plan import LayerPlan
from protocol.messages import DecryptReply, DecryptRequest, RunDone
from protocol.net.certs import make_role_cert, new_ca
from protocol.net.transport import Endpoint
from protocol.runtime import config
from protocol.runtime.config import PeerConfig
from scenarios.launch import free_ports, start, wait_all, write_local_run

pytestmark = pytest.mark.integration


def register_both(a: Endpoint, b: Endpoint, public: PublicKey, shared_users: int, batch_users: int) -> LayerPlan:
    """Both parties register the same layer (d = h = 16) with the coordinator, as the parties' runs do."""
    plan = LayerPlan(d=16, h=16, batch_users=batch_users, lr_w=0.05, key_fingerprint=public.fingerprint)
    for party in (a, b):
        register_layer(party, plan, shared_users)
    return plan


def test_decryption_service(tmp_path: Path) -> None:
    ca = new_ca()  # the run's CA, kept here so the test can issue an outsider's certificate from it
    run = write_local_run(tmp_path, {}, peer_timeout=30, ca=ca)
    assert not list(tmp_path.rglob("ca.key")), "the CA's key must not be left in the run directory"
    coordinator = start(run, "coordinator")
    a = run.endpoint("party_a").start()
    b = run.endpoint("party_b").start()
    try:
        public = receive_public_key(a, None)
        assert receive_public_key(b, public.fingerprint).n == public.n
        assert public.bits == 2048
        enc = Encryptor(public)
        register_both(a, b, public, shared_users=10, batch_users=5)
        layout = packing.Layout.fit(16, 104, public)  # a 40-bit value, a 60-bit mask and the carry
        values = np.random.default_rng(0).integers(-(2**40), 2**40, size=(5, 16)).astype(object)
        u = packing.encrypt(enc, values, layout, 0, 2**40)

        # the right role gets the right values back, through a mask
        assert (decrypt_masked(a, Step.FORWARD, train_label(1, 0), u, enc) == values).all()

        # the other party may not ask for A's step
        with pytest.raises(ProtocolError, match="party_b may not ask for decryptions of step 'forward'"):
            request_decryption(b, Step.FORWARD, train_label(1, 0), packing.mask(u, enc)[0].flat())

        # malformed ciphertexts are refused, naming the first bad one
        messages.send(a, "coordinator", DecryptRequest("forward", "bad", [u.flat()[0], 0]))
        reply = messages.receive(a, "coordinator", DecryptReply)
        assert "ciphertext 1: ciphertext out of range" in reply.error

        # a third party with a certificate from the same CA is not a peer of the coordinator
        certs = run.root / "eve"
        make_role_cert(certs, "eve", *ca, a.cfg.key_passphrase)
        c_addr = config.load(run.configs["party_a"]).data["peers"]["coordinator"]["address"]
        eve_cfg = dataclasses.replace(a.cfg, role="eve", listen=f"127.0.0.1:{free_ports(1)[0]}",
                                      cert=certs / "eve.pem", key=certs / "eve.key",
                                      peers={"coordinator": PeerConfig("coordinator", c_addr, "coordinator",
                                                                       a.cfg.ca, None)})
        with Endpoint(eve_cfg, {"coordinator": frozenset({DecryptReply.TAG})}) as eve:
            with pytest.raises(PeerError, match="is not one of its configured peers"):
                request_decryption(eve, Step.FORWARD, "e0/b0", packing.mask(u, enc)[0].flat())

        messages.send(a, "coordinator", RunDone())
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
    assert all(e["run"] == "local" and e["label"] in ("train/e1/b0", "bad") for e in audit)
    assert (run.workdir("coordinator") / "audit.jsonl").stat().st_mode & 0o777 == 0o600


def test_decryptions_follow_the_registered_schedule(tmp_path: Path) -> None:
    """Replays, repeats, wrong counts and steps out of order are refused, and each refusal is audited."""
    run = write_local_run(tmp_path, {}, peer_timeout=30)
    coordinator = start(run, "coordinator")
    a, b = run.endpoint("party_a").start(), run.endpoint("party_b").start()
    try:
        public = receive_public_key(a, None)
        receive_public_key(b, None)
        enc = Encryptor(public)
        plan = register_both(a, b, public, shared_users=64, batch_users=32)
        rows, cols = plan.layouts(public)

        def cts(count: int) -> list:
            return [enc.encrypt(k) for k in range(count)]

        def refused(party: Endpoint, step: Step, label: str, count: int, match: str) -> None:
            with pytest.raises(ProtocolError, match=match):
                request_decryption(party, step, label, cts(count))

        step0 = train_label(1, 0)
        refused(b, Step.BACKWARD, step0, 32, "backward train/e1/b0 was served already or comes before forward")
        request_decryption(a, Step.FORWARD, step0, cts(32 * rows.ciphertexts))
        refused(a, Step.EVALUATE, eval_label(1, 0), 32, "while training step train/e1/b0 has not finished")
        request_decryption(b, Step.BACKWARD, step0, cts(32 * cols.ciphertexts))
        refused(b, Step.BACKWARD, step0, 32, "was served already")
        request_decryption(a, Step.REFRESH, step0, cts(plan.d * rows.ciphertexts))
        refused(a, Step.FORWARD, step0, 32, "repeats or goes back")
        # A's [W] by columns (h ciphertexts), saved or current, sent as a forward request
        refused(a, Step.FORWARD, train_label(1, 1), plan.h, "16 ciphertexts for forward train/e1/b1; the plan has 32")
        refused(a, Step.FORWARD, train_label(1, 1), 33, "33 ciphertexts")
        refused(a, Step.FORWARD, train_label(1, 2), 32, "names batch 2, but an epoch has 2")
        refused(a, Step.FORWARD, "my/own/label", 32, "names no step of the schedule")
        refused(a, Step.EVALUATE, train_label(1, 1), 32, "evaluate is not a decryption of training label")
        request_decryption(a, Step.EVALUATE, eval_label(1, 0), cts(32))
        refused(a, Step.EVALUATE, eval_label(1, 0), 32, "repeats or goes back")
        messages.send(a, "coordinator", RunDone())
        assert wait_all(run, {"coordinator": coordinator}, timeout=30)["coordinator"].returncode == 0
    finally:
        a.close()
        b.close()
        if coordinator.poll() is None:
            coordinator.kill()
    audit = [json.loads(line) for line in (run.workdir("coordinator") / "audit.jsonl").read_text().splitlines()]
    assert [("refused" in e) for e in audit] == [True, False, True, False, True, False, True, True, True, True,
                                                  True, True, False, True]
    assert "16 ciphertexts" in audit[7]["refused"] and audit[7]["who"] == "party_a"
