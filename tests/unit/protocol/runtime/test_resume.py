"""A peer cannot hold the run in a loop of rollbacks: each process rolls back at most [checkpoint] max_rollbacks
times, then stops with an error naming why it last rolled back."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from protocol.errors import ConfigError, PeerError, PeerLost
from protocol.runtime import checkpoint, resume
from protocol.runtime.checkpoint import CheckpointSettings
from protocol.runtime.resume import Agreed, Holding, resumable
from protocol.settings.config import Table


def test_a_peer_that_keeps_resuming_stops_the_run_after_max_rollbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    """B sends A a Resume with a fresh nonce each time A has resumed (the transport turns it into PeerLost); A's
    handshake always succeeds. Without a bound A would roll back forever."""
    endpoint = SimpleNamespace(cfg=SimpleNamespace(role="party_a", connect_timeout=1.0, peer_timeout=1.0))
    monkeypatch.setattr(resume, "lead", lambda endpoint, own, timeout: Agreed(0, 1))
    resumed: list[Agreed] = []

    def interrupted_again(agreed: Agreed) -> str:
        resumed.append(agreed)
        if len(resumed) > 20:  # the loop the bound is there to stop
            return "still looping"
        raise PeerLost("party_b is resuming from a checkpoint")

    def fresh() -> str:
        raise PeerLost("party_b is resuming from a checkpoint")

    with pytest.raises(PeerError, match=r"^party_b is resuming from a checkpoint; not rolling back again: party_a "
                                        r"has rolled back 3 times in this run, the most \[checkpoint\] "
                                        r"max_rollbacks = 3 allows$"):
        resumable(endpoint, CheckpointSettings(max_rollbacks=3), lambda: Holding("p", [0]), fresh,
                  interrupted_again, resuming=False)
    assert len(resumed) == 3


def test_max_rollbacks_is_read_and_checked() -> None:
    def read(data: dict) -> CheckpointSettings:
        return checkpoint.read_settings(Table({"checkpoint": data}, Path("a.toml")))

    assert read({}).max_rollbacks == 10
    assert read({"max_rollbacks": 2}).max_rollbacks == 2
    with pytest.raises(ConfigError, match=r"\[checkpoint\] max_rollbacks: must be 1 or more"):
        read({"max_rollbacks": 0})
