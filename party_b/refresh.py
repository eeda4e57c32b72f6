"""B's refresh: recompute u for the shared users whose columns changed, for A's serving store.

    python -m party_b refresh --config b.toml [--all]

Run it while A serves (`python -m party_a serve`) and the coordinator's refresh
service runs (`python -m coordinator refresh`). B reads its user table again,
encodes it with the encoding stored with the model, and compares each shared user's
encoded row with the digest stored when that user's u was last computed. For the
changed users (every shared user with --all) B runs one evaluation forward per batch
(steps 1-3: [u] = e_B·[W] by rows, masked, decrypted by the coordinator for A, the
mask sent to A). A swaps the new u in whole and confirms; only then does B store the
new digests, so a failed refresh is simply run again. A shared user missing from
B's table keeps its u.

Customers come and go: after a delta PSI (`python -m party_b psi --delta`), users who
joined the intersection since the model was trained are appended to the model's
shared users at both parties (psi/membership.py: both derive the same list, and the
session carries its size and digest for A to check) and get their first u through
the stored tower and [W], so A serves them federated without a retrain; users who
left are refreshed no more (A serves them as its own users outside the intersection).

With noise on e_B, each refreshed user's release is counted in the store before the
session sends anything (a session A never confirms still counts, and its rerun is a
new release), and a user whose next release would pass B's `[privacy] max_epsilon`
is left out: its u stays as it was.

A model whose chosen epoch is 0 (the federated model as it starts, which is A alone)
does not read u, so B refreshes nothing for it and releases nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from party_b.config import PartyBConfig, load
from party_b.follow import TowerTurn
from protocol.layer.defence import Defence
from party_b.privacy import embedding_noise
from party_b.store import load_w_rows, read_users, row_digests, write_users
from party_b.tower import TowerB
from protocol import messages
from protocol.compute.pool import open_pool
from protocol.compute.workers import WorkerPool
from protocol.crypto.paillier import Encryptor
from protocol.data.stored import load_state
from protocol.data.tables import Encoding, Features
from protocol.errors import DataError, ProtocolError, StoreError
from protocol.layer import steps
from protocol.layer.decryption import Step, receive_public_key, refresh_batches, register_layer
from protocol.layer.steps import FORWARD_ONLY, Side, BTurn
from protocol.messages.plan import LayerPlan
from protocol.messages.serving import RefreshDone, RefreshRequest
from protocol.net.transport import Endpoint
from protocol.privacy import RowNoise, RowPrivacy, spent
from protocol.roles import A, B, C
from protocol.runtime.cli import setup_logging
from protocol.runtime.progress import progress_bar
from protocol.store.models import current_model, refresh_run_id
from psi.membership import Membership, membership_since, roster_digest

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Changes:
    """B's shared users as its table holds them now, and which of them changed since their u was computed."""

    ids: list[str]  # the model's shared users, then those who joined since
    features: Features  # per shared user (zeros for one no longer in the table)
    digests: list[str]  # per shared user: now, or as stored for one no longer in the table
    changed: np.ndarray  # positions to refresh: every joined user, and shared users whose row changed
    missing: int
    releases: np.ndarray  # per shared user: its e_B rows released so far
    stored: list[str]  # per shared user: the digest stored now ("" for a joined user: none yet)
    membership: Membership


def find_changes(cfg: PartyBConfig, directory: Path, manifest: dict, everyone: bool) -> Changes:
    """Encode B's table as at training and compare with the stored digests; add the users who joined the
    intersection since the model was trained, and leave out those who left."""
    everything = read_users(directory)
    # a joined user's row is written with digest "" before its first session (its release counted), and A
    # confirms it only at the session's end: until then it is not in the roster A holds
    stored = everything[everything["digest"] != ""]
    pending = dict(zip(everything["user_id"][everything["digest"] == ""], everything["releases"]))
    membership = membership_since(cfg.basics.workdir, list(stored["user_id"]))
    user_ids = list(stored["user_id"]) + membership.joined
    old_digests = list(stored["digest"]) + [""] * len(membership.joined)
    frame, ids = cfg.users.load()
    features = Encoding.from_json(manifest["encoding"]).apply(frame, cfg.users.table)
    row_of = {uid: r for r, uid in enumerate(ids)}
    rows = np.array([row_of.get(uid, -1) for uid in user_ids], dtype=np.int64)
    present = rows >= 0
    gone = int((~present[len(stored):]).sum())
    if gone:
        raise DataError(f"{gone} of the {len(membership.joined)} users who joined the intersection at the last PSI "
                        f"are no longer in {cfg.users.table.path}: run `python -m party_b psi --delta` (with A) "
                        f"again before refreshing")
    shared = features.take(np.where(present, rows, 0))
    shared.numeric[~present], shared.categorical[~present] = 0, 0
    now = row_digests(shared)
    digests = [d if ok else old for d, old, ok in zip(now, old_digests, present)]
    differs = np.array([d != old for d, old in zip(digests, old_digests)], dtype=bool)
    changed = np.flatnonzero(present & membership.active & (differs | everyone))
    releases = np.concatenate([stored["releases"].to_numpy(dtype=np.int64),
                               np.array([pending.get(uid, 0) for uid in membership.joined], dtype=np.int64)])
    return Changes(user_ids, shared, digests, changed, int((~present).sum()), releases, old_digests, membership)


def push(cfg: PartyBConfig, model_id: str, manifest: dict, directory: Path, changes: Changes,
         pool: WorkerPool, noise: RowNoise | None) -> None:
    """One refresh session: the changed users' u through the coordinator to A (e_B through `noise`, the
    defence the model was trained with, when it had one), A's confirmation."""
    network = dataclasses.replace(cfg.basics.network, run_id=refresh_run_id(model_id))
    endpoint = Endpoint(network, messages.inbox_tags(B)).start()
    try:
        for peer in (A, C):
            messages.send(endpoint, peer, RefreshRequest(model_id, changes.changed, len(changes.ids),
                                                         roster_digest(changes.ids)))
        public = receive_public_key(endpoint, cfg.basics.public_key_pin)
        if public.fingerprint != manifest["key_fingerprint"]:
            raise StoreError(f"the coordinator announced key {public.fingerprint}, but model {model_id!r} was "
                             f"trained under {manifest['key_fingerprint']}")
        plan = LayerPlan.from_message(manifest["plan"], "B's model store")
        register_layer(endpoint, plan, changes.changed.size)
        side = Side(endpoint, public, Encryptor(public, cfg.encryption), pool, plan, w=load_w_rows(directory, public))
        settings = manifest["tower_settings"]
        tower = TowerB(changes.features, plan.d, list(settings["hidden"]), settings["feature_dim"])
        tower.load_state_dict(load_state(directory, "tower_b.pt"))
        bar = progress_bar(refresh_batches(changes.changed, plan), task="refresh", desc="refresh", unit="batch",
                           enabled=cfg.psi.show_progress)
        for label, users in bar:
            steps.walk(FORWARD_ONLY, side, BTurn(label, users, TowerTurn(tower, None, Defence(noise)),
                                                 decrypt_as=Step.EVALUATE))
        done = messages.receive(endpoint, A, RefreshDone)
        if (done.model_id, done.users) != (model_id, changes.changed.size):
            raise ProtocolError(f"{A} confirmed {done.users} users of model {done.model_id!r}, not "
                                f"{changes.changed.size} of {model_id!r}")
    except BaseException as exc:
        endpoint.abort(f"{B} stopped the refresh: {exc or type(exc).__name__}")
        raise
    finally:
        endpoint.close()


def within_budget(changes: Changes, settings: RowPrivacy, model_id: str) -> Changes:
    """`changes` less the users whose next release would pass `settings.max_epsilon` (logged): their u and stored
    digest stay, so they remain changed."""
    limit = settings.max_releases()
    if limit is None:
        return changes
    over = changes.releases[changes.changed] + 1 > limit
    if over.any():
        log.warning("model %s: %d changed users are left out of the refresh: one more release of their e_B row "
                    "would spend ε = %.3f at δ = %g, past [privacy] max_epsilon = %g (%d releases at most)", model_id,
                    int(over.sum()), spent(settings, limit + 1)["epsilon"], settings.dp_delta, settings.max_epsilon,
                    limit)
    digests = list(changes.digests)
    for user in changes.changed[over]:
        digests[user] = changes.stored[user]
    return dataclasses.replace(changes, changed=changes.changed[~over], digests=digests)


def refresh_users(directory: Path, model_id: str, changes: Changes, settings: RowPrivacy,
                  send: Callable[[Changes, RowNoise | None], None]) -> tuple[Changes, np.ndarray]:
    """`send` the changed users' u (through noise of `settings`, when on), then store their digests. With noise,
    the users past the budget are left out and the others' releases are counted in the store before `send`
    runs, so a session that fails, or that A never confirms, still counts. Returns the users refreshed and the
    releases per shared user."""
    releases = changes.releases
    noise = embedding_noise(settings) if settings.on else None
    if noise is not None:
        changes = within_budget(changes, settings, model_id)
        if changes.changed.size == 0:
            return changes, releases
        noise.restore({"releases": [[int(u), int(releases[u])] for u in changes.changed]})
        releases = releases.copy()
        releases[changes.changed] += 1
        write_users(directory, changes.ids, changes.stored, releases)
    send(changes, noise)
    write_users(directory, changes.ids, changes.digests, releases)
    return changes, releases


def main(config_path: Path, everyone: bool = False) -> None:
    cfg = load(config_path)
    setup_logging(B, cfg.basics.workdir)
    torch.set_num_threads(1)
    directory, manifest = current_model(cfg.basics.workdir, B)
    model_id = manifest["model_id"]
    if manifest["epoch"] == 0:  # q_j = 0 at the start: a u released now would buy A nothing
        log.info("model %s is the federated model as it starts (epoch 0: A alone), which does not read u; "
                 "nothing to refresh", model_id)
        return
    changes = find_changes(cfg, directory, manifest, everyone)
    joined, left = len(changes.membership.joined), int(changes.membership.left.sum())
    if joined or left:
        log.info("model %s: %d users joined the intersection since it was trained (their first u now), %d left "
                 "(refreshed no more)", model_id, joined, left)
    if changes.missing:
        log.warning("%d shared users are no longer in %s: their u stays as it was", changes.missing,
                    cfg.users.table.path)
    if changes.changed.size == 0:
        log.info("model %s: no shared user's columns changed; nothing to refresh", model_id)
        return
    started = time.perf_counter()
    settings = RowPrivacy(**manifest["privacy"])
    if settings.on:
        settings = dataclasses.replace(settings, max_epsilon=cfg.privacy.max_epsilon)
    with open_pool(cfg.basics.compute) as pool:
        changes, releases = refresh_users(directory, model_id, changes, settings, lambda c, noise: push(
            cfg, model_id, manifest, directory, c, pool, noise))
    if changes.changed.size == 0:
        return
    seconds = time.perf_counter() - started
    log.info("model %s: refreshed u of %d of %d shared users in %.1fs (%.0f users/s)", model_id,
             changes.changed.size, len(changes.ids), seconds, changes.changed.size / seconds)
    if settings.on:
        most = int(releases.max())
        log.info("noise on e_B as at training: the most released user has had %d releases, ε = %.3f at δ = %g",
                 most, spent(settings, most)["epsilon"], settings.dp_delta)
