"""Noise is never drawn twice (issue 20, findings 2 and 3): each release is on disk before it is sent, a restore never
rewinds it, a step redone after a resume re-sends the rows released for it whatever the peer changed, a refresh counts
before it sends, and a per-user ε budget refuses what would pass it."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest

from party_a.training.privacy import delta_noise
from party_b.privacy import embedding_noise
from party_b.refresh import Changes, refresh_users
from party_b.store import read_users, write_users
from protocol.errors import ConfigError, PeerError, ProtocolError
from protocol.privacy import RowPrivacy, epsilon, read_privacy, release_key
from protocol.settings.config import Table
from protocol.store import releases as ledger_module
from protocol.store.releases import ReleaseLedger, ledger_path
from psi.membership import Membership

SIGMA = 0.5
USERS = np.array([3, 0, 5, 1])
KEY = "train/e1/b0"


def rows(seed: int) -> np.ndarray:
    return np.tanh(np.random.default_rng(seed).standard_normal((USERS.size, 6)))


def checkpointed(noise) -> dict:
    return json.loads(json.dumps(noise.state()))  # as a checkpoint keeps it


@pytest.mark.parametrize("seed", [None, 7])
def test_a_forced_resume_with_changed_inputs_releases_no_noise_twice(tmp_path: Path, seed: int | None) -> None:
    """The attack: the peer forces a resume to the checkpoint before a step and changes its own input, so that the
    victim's same noise would land on other data (r1 - r2 = x - y). The redone step re-sends the released rows."""
    settings = RowPrivacy(noise_multiplier=SIGMA, seed=seed)
    for build in (lambda: embedding_noise(settings, tmp_path / "b", "run"),
                  lambda: delta_noise(settings, 4, 2.0, tmp_path / "a", "run")):
        noise = build()
        checkpoint = checkpointed(noise)
        first = noise(USERS, rows(1), release_key(KEY))
        for resumed in (noise, build()):  # rolled back in-process, or restarted from the ledger
            resumed.restore(checkpoint)
            again = resumed(USERS, rows(2), release_key(f"{KEY}/g1"))  # the peer's input changed
            assert np.array_equal(again, first), "the redone step drew noise again"
            assert all(resumed.releases[int(u)] == 1 for u in USERS)
        later = resumed(USERS, rows(2), "train/e2/b0")
        assert np.mean(later == first) < 0.25, "a new step reused noise"  # equal only where both are clamped
        assert all(resumed.releases[int(u)] == 2 for u in USERS)


def test_a_seeded_run_resumed_goes_on_with_the_ledgers_generator_never_rewound(tmp_path: Path) -> None:
    settings = RowPrivacy(noise_multiplier=SIGMA, seed=11)
    whole = embedding_noise(settings)
    expected = [whole(USERS, rows(1), "train/e1/b0"), whole(USERS, rows(1), "train/e1/b1")]
    noise = embedding_noise(settings, tmp_path, "run")
    checkpoint = checkpointed(noise)
    assert np.array_equal(noise(USERS, rows(1), "train/e1/b0"), expected[0])
    restarted = embedding_noise(settings, tmp_path, "run")
    restarted.restore(checkpoint)
    assert np.array_equal(restarted(USERS, rows(1), "train/e1/b0"), expected[0])  # re-sent, not redrawn
    assert np.array_equal(restarted(USERS, rows(1), "train/e1/b1"), expected[1])  # the stream goes on


def test_the_release_is_on_disk_before_its_rows_are_returned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    noise = embedding_noise(RowPrivacy(noise_multiplier=SIGMA), tmp_path, "run")
    out = noise(USERS, rows(1), KEY)
    path = ledger_path(tmp_path, "run", "e_b")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    on_disk = ReleaseLedger(path).state
    assert all(on_disk.counts[int(u)] == 1 for u in USERS)
    assert np.array_equal(np.stack([on_disk.last[int(u)][1] for u in USERS]), out)
    assert on_disk.rng is None, "OS-seeded noise must not be written down"

    def full(self, record: dict) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(ReleaseLedger, "append", full)
    with pytest.raises(OSError):
        noise(USERS, rows(2), "train/e2/b0")  # no row without its record


def test_counts_never_go_down_and_a_cut_short_record_is_dropped(tmp_path: Path) -> None:
    settings = RowPrivacy(noise_multiplier=SIGMA)
    noise = embedding_noise(settings, tmp_path, "run")
    noise(USERS, rows(1), KEY)
    noise.restore({"releases": [[3, 0], [0, 4]]})  # an older checkpoint lowers nothing; a higher count is a floor
    path = ledger_path(tmp_path, "run", "e_b")
    with open(path, "ab") as f:
        f.write(b'{"key": "train/e1/b1", "users": [3')  # a crash in the middle of a write: never sent
    reread = embedding_noise(settings, tmp_path, "run")
    assert reread.releases == {3: 1, 0: 4, 5: 1, 1: 1}
    reread(np.array([3]), rows(2)[:1], "train/e1/b1")
    assert embedding_noise(settings, tmp_path, "run").releases[3] == 2


def test_a_compacted_ledger_holds_what_the_log_did(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger_module, "COMPACT_AT", 2000)
    settings = RowPrivacy(noise_multiplier=SIGMA, seed=1)
    noise = embedding_noise(settings, tmp_path, "run")
    for step in range(30):
        noise(USERS, rows(step), f"train/e{step}/b0")
    path = ledger_path(tmp_path, "run", "e_b")
    assert path.stat().st_size < 6000 and path.read_bytes().startswith(b'{"snapshot"')
    reread = embedding_noise(settings, tmp_path, "run")
    assert reread.releases == noise.releases and reread.rng.bit_generator.state == noise.rng.bit_generator.state
    assert np.array_equal(reread.again(USERS), noise.again(USERS))


def test_a_release_past_the_budget_is_refused(tmp_path: Path) -> None:
    budget = epsilon(SIGMA * 4, 2, 1e-5) * 1.001
    settings = RowPrivacy(noise_multiplier=SIGMA * 4, max_epsilon=budget)
    assert settings.max_releases() == 2
    noise = embedding_noise(settings, tmp_path, "run")
    noise(USERS, rows(1), "train/e1/b0")
    last = noise(USERS[:2], rows(1)[:2], "train/e2/b0")
    assert np.array_equal(noise(USERS[:2], rows(3)[:2], "train/e2/b0"), last)  # re-sending costs nothing
    with pytest.raises(ProtocolError, match=r"2 users past the privacy budget.*max_epsilon"):
        noise(USERS, rows(1), "train/e3/b0")
    assert noise.releases[3] == 2 and noise.releases[5] == 1, "a refused release must not count"


def test_max_epsilon_is_read_and_needs_noise() -> None:
    def read(keys: dict) -> RowPrivacy:
        return read_privacy(Table({"privacy": keys}, Path("b.toml")), "e_B")

    assert read({}).max_epsilon is None and read({"noise_multiplier": 1.0}).max_releases() is None
    assert read({"noise_multiplier": 1.0, "max_epsilon": 8}).max_epsilon == 8.0
    with pytest.raises(ConfigError, match="max_epsilon.*needs noise_multiplier"):
        read({"max_epsilon": 8.0})
    with pytest.raises(ConfigError, match="max_epsilon.*positive"):
        read({"noise_multiplier": 1.0, "max_epsilon": 0})


def _store(directory: Path, releases: list[int]) -> Changes:
    ids, stored = ["u0", "u1", "u2"], ["d0", "d1", "d2"]
    write_users(directory, ids, stored, np.array(releases))
    return Changes(ids, None, ["n0", "d1", "n2"], np.array([0, 2]), 0, np.array(releases), stored,
                   Membership([], np.zeros(3, dtype=bool)))


def test_a_refresh_without_confirmation_still_counts(tmp_path: Path) -> None:
    """A takes every u + R and R and never confirms: each rerun is a fresh release, and it counts."""
    settings = RowPrivacy(noise_multiplier=SIGMA)
    sent = []

    def unconfirmed(changes: Changes, noise) -> None:
        sent.append(read_users(tmp_path)["releases"].tolist())  # what the store holds as the session sends
        raise PeerError("A never confirmed")

    for rerun in range(2):
        changes = _store(tmp_path, read_users(tmp_path)["releases"].tolist() if rerun else [1, 1, 1])
        with pytest.raises(PeerError):
            refresh_users(tmp_path, "m", changes, settings, unconfirmed)
    assert sent == [[2, 1, 2], [3, 1, 3]]
    users = read_users(tmp_path)
    assert users["releases"].tolist() == [3, 1, 3] and users["digest"].tolist() == ["d0", "d1", "d2"]


def test_a_refresh_leaves_out_the_users_past_the_budget(tmp_path: Path) -> None:
    settings = RowPrivacy(noise_multiplier=SIGMA * 4, max_epsilon=epsilon(SIGMA * 4, 2, 1e-5) * 1.001)
    changes = _store(tmp_path, [2, 0, 1])
    sent = []
    done, releases = refresh_users(tmp_path, "m", changes, settings, lambda c, noise: sent.append(c.changed.tolist()))
    assert sent == [[2]] and done.changed.tolist() == [2] and releases.tolist() == [2, 0, 2]
    users = read_users(tmp_path)
    assert users["digest"].tolist() == ["d0", "d1", "n2"], "a user left out stays changed"
