"""A real coordinator process decrypts what the step's submitter sends for the step's other party, and no one
else, and only as the registered schedule allows."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from protocol import messages
from protocol.crypto import packing
from protocol.crypto.paillier import Encryptor, PublicKey
from protocol.errors import PeerError, ProtocolError
from protocol.keys.certs import make_role_cert, new_ca
from protocol.layer.decryption import (Step, check_refresh, eval_label, receive_plaintexts, receive_public_key,
                                       receive_unmasked, register_layer, send_masked, submit, train_label)
from protocol.messages.coordinator import DecryptReply, DecryptRequest
from protocol.messages.plan import LayerPlan
from protocol.messages.run import RunDone
from protocol.net.transport import Endpoint
from protocol.settings import config
from protocol.settings.config import PeerConfig
from scenarios.launch import LocalRun, free_ports, observe_all, start, wait_all, write_local_run

pytestmark = pytest.mark.integration


def register_both(a: Endpoint, b: Endpoint, public: PublicKey, shared_users: int, batch_users: int) -> LayerPlan:
    """Both parties register the same layer (d = h = 16) with the coordinator, as the parties' runs do."""
    plan = LayerPlan(d=16, h=16, batch_users=batch_users, lr_w=0.05, key_fingerprint=public.fingerprint)
    for party in (a, b):
        register_layer(party, plan, shared_users)
    return plan


def stop(coordinator: subprocess.Popen, *endpoints: Endpoint) -> None:
    """Close the test's own endpoints; kill the coordinator if it is still running."""
    for endpoint in endpoints:
        endpoint.close()
    if coordinator.poll() is None:
        coordinator.kill()


def decryption_log(run: LocalRun) -> list[dict]:
    """The coordinator's decryption log, one entry per request."""
    return [json.loads(line) for line in (run.workdir("coordinator") / "audit.jsonl").read_text().splitlines()]


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

        # B submits, A gets the right values back, through B's mask
        send_masked(b, Step.FORWARD, train_label(1, 0), u, enc)
        assert (receive_unmasked(a, Step.FORWARD, train_label(1, 0), layout, 5, public) == values).all()

        # A may not submit a step whose plaintext goes to A: it could have anything decrypted for itself
        submit(a, Step.FORWARD, train_label(1, 1), packing.mask(u, enc)[0].flat())
        with pytest.raises(ProtocolError, match="party_a may not submit step 'forward'"):
            receive_plaintexts(a, Step.FORWARD, train_label(1, 1), 5)

        # malformed ciphertexts are refused, naming the first bad one
        messages.send(b, "coordinator", DecryptRequest("forward", "bad", [u.flat()[0], 0]))
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
                submit(eve, Step.FORWARD, "e0/b0", packing.mask(u, enc)[0].flat())

        messages.send(a, "coordinator", RunDone(None))
        out = wait_all(run, {"coordinator": coordinator}, timeout=30)
        assert out["coordinator"].returncode == 0, out["coordinator"].output
    finally:
        stop(coordinator, a, b)
    audit = decryption_log(run)
    assert [(e["who"], e["step"], e["count"], "refused" in e) for e in audit] == [
        ("party_b", "forward", 5, False), ("party_a", "forward", 5, True), ("party_b", "forward", 2, True)]
    assert all(e["run"] == "local" and e["label"] in ("train/e1/b0", "train/e1/b1", "bad") for e in audit)
    assert (run.workdir("coordinator") / "audit.jsonl").stat().st_mode & 0o777 == 0o600


def test_decryptions_follow_the_registered_schedule(tmp_path: Path) -> None:
    """Replays, repeats, wrong counts and steps out of order are refused, and each refusal is audited."""
    run = write_local_run(tmp_path, {}, peer_timeout=30)
    observe_all(run)
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

        def honest_q(label: str, off_by_one: tuple[int, int] | None = None) -> packing.Packed:
            """[Q] by rows as an honest A sends it for a refresh of cts(d·ciphertexts), or with one slot off."""
            q = np.array([[v >> plan.shift for v in row] for row in
                          packing.unpack(list(range(plan.d * rows.ciphertexts)), rows, plan.d, public.n)], dtype=object)
            if off_by_one is not None:
                q[off_by_one] += 1
            return packing.encrypt(enc, q, rows, plan.w_bits, plan.q_bound)

        def served(submitter: Endpoint, step: Step, label: str, count: int) -> None:
            submit(submitter, step, label, cts(count))
            receive_plaintexts(b if submitter is a else a, step, label, count)

        def refused(submitter: Endpoint, receiver: Endpoint, step: Step, label: str, count: int, match: str) -> None:
            submit(submitter, step, label, cts(count))
            with pytest.raises(ProtocolError, match=match):
                receive_plaintexts(receiver, step, label, count)

        step0 = train_label(1, 0)
        refused(a, b, Step.BACKWARD, step0, 32, "backward train/e1/b0 was served already or comes before forward")
        # A's [W] by columns, saved or current, as a forward request: A may not submit forwards at all
        refused(a, a, Step.FORWARD, step0, plan.h, "party_a may not submit step 'forward'")
        served(b, Step.FORWARD, step0, 32 * rows.ciphertexts)
        refused(b, a, Step.EVALUATE, eval_label(1, 0), 32, "while training step train/e1/b0 has not finished")
        served(a, Step.BACKWARD, step0, 32 * cols.ciphertexts)
        refused(a, b, Step.BACKWARD, step0, 32, "was served already")
        served(b, Step.REFRESH, step0, plan.d * rows.ciphertexts)
        refused(b, a, Step.FORWARD, train_label(1, 1), 32, "while training step train/e1/b0 has not finished")
        check_refresh(b, step0, honest_q(step0))  # B's check of A's [Q]: the step ends only with it
        refused(b, a, Step.FORWARD, step0, 32, "repeats or goes back")
        # B's [W] by rows (d ciphertexts) as a forward: the wrong count for a batch of 32
        refused(b, a, Step.FORWARD, train_label(1, 1), plan.d, "16 ciphertexts for forward train/e1/b1; the plan "
                                                              "has 32")
        refused(b, a, Step.FORWARD, train_label(1, 1), 33, "33 ciphertexts")
        refused(b, a, Step.FORWARD, train_label(1, 2), 32, "names batch 2, but an epoch has 2")
        refused(b, a, Step.FORWARD, "my/own/label", 32, "names no step of the schedule")
        refused(b, a, Step.EVALUATE, train_label(1, 1), 32, "evaluate is not a decryption of training label")
        served(b, Step.EVALUATE, eval_label(1, 0), 32)
        refused(b, a, Step.EVALUATE, eval_label(1, 0), 32, "repeats or goes back")
        # a [Q] one unit off in one slot fails B's check, names A, and stops every later decryption
        step1 = train_label(1, 1)
        served(b, Step.FORWARD, step1, 32 * rows.ciphertexts)
        served(a, Step.BACKWARD, step1, 32 * cols.ciphertexts)
        served(b, Step.REFRESH, step1, plan.d * rows.ciphertexts)
        with pytest.raises(ProtocolError, match="party_a sent B a \\[Q\\] by rows that is not the refresh"):
            check_refresh(b, step1, honest_q(step1, off_by_one=(3, 5)))
        refused(b, a, Step.EVALUATE, eval_label(1, 1), 32, "the run stopped: B's check of train/e1/b1 found")
        metrics = run.scrape("coordinator")
        messages.send(a, "coordinator", RunDone(None))
        assert wait_all(run, {"coordinator": coordinator}, timeout=30)["coordinator"].returncode == 0
    finally:
        stop(coordinator, a, b)
    audit = decryption_log(run)
    assert [("refused" in e) for e in audit] == [True, True, False, True, False, True, False, True, False, True, True,
                                                  True, True, True, True, False, True, False, False, False, True, True]
    assert "may not submit" in audit[1]["refused"] and audit[1]["who"] == "party_a"
    assert "16 ciphertexts" in audit[10]["refused"] and audit[10]["who"] == "party_b"
    assert audit[20]["step"] == "check" and "differs from the one of the refresh" in audit[20]["refused"]
    # the coordinator's metrics count the same, each refusal under its reason
    counted = {key.removeprefix("vfrec_decryptions_").replace("_total", ""): value for key, value in metrics.items()
               if key.startswith("vfrec_decryptions_")}
    assert counted == {'served{step="forward"}': 2, 'served{step="backward"}': 2, 'served{step="refresh"}': 2,
                       'served{step="check"}': 1, 'served{step="evaluate"}': 1,
                       'refused{reason="order"}': 6, 'refused{reason="submitter"}': 1, 'refused{reason="count"}': 2,
                       'refused{reason="schedule"}': 3, 'refused{reason="check"}': 1, 'refused{reason="stopped"}': 1}
    assert sum(counted.values()) == len(audit)
