"""Who joined and who left the intersection since a model was trained, and A's check of B's roster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from party_a.serving.refresh import with_joined
from party_a.serving.store import u_frame
from protocol.errors import ProtocolError
from protocol.messages.serving import RefreshRequest
from psi.membership import membership_since, roster_digest
from psi.shared import write_shared

MODEL = "run-1-20261206T000000Z-abcdef"


def shared(workdir: Path, rows: list[tuple[int, str, bool]]) -> None:
    write_shared(workdir, pd.DataFrame({"position": pd.Series([r[0] for r in rows], dtype="int64"),
                                        "user_id": [r[1] for r in rows], "active": [r[2] for r in rows]}))


def test_joined_in_position_order_and_left_when_inactive_or_gone(tmp_path: Path) -> None:
    shared(tmp_path, [(0, "a", True), (1, "b", False), (3, "x", True), (7, "y", False), (9, "w", True)])
    membership = membership_since(tmp_path, ["a", "b", "c"])  # c: not in the list at all (a later full PSI)
    assert membership.joined == ["x", "w"]  # y left again before any refresh: never joined the model's roster
    assert membership.left.tolist() == [False, True, True]
    assert membership.active.tolist() == [True, False, False, True, True]


def test_no_shared_list_means_no_change(tmp_path: Path) -> None:
    membership = membership_since(tmp_path, ["a", "b"])
    assert membership.joined == [] and not membership.left.any()


def request(users: list[int], roster: list[str]) -> RefreshRequest:
    return RefreshRequest(MODEL, np.array(users), len(roster), roster_digest(roster))


def test_a_appends_the_joined_users_once_b_refreshes_the_same_roster(tmp_path: Path) -> None:
    shared(tmp_path, [(0, "a", True), (1, "b", True), (2, "c", True), (3, "d", True)])
    store = u_frame(["a", "b"], np.ones((2, 3), np.float32))
    grown = with_joined(store, 3, tmp_path, request([2, 3], ["a", "b", "c", "d"]))
    assert grown["user_id"].tolist() == ["a", "b", "c", "d"]
    assert (grown.iloc[2:][["u0", "u1", "u2"]].to_numpy() == 0).all() and (grown["written"].iloc[2:] == 0).all()
    assert grown.iloc[:2].equals(store)


@pytest.mark.parametrize("roster", [["a", "b", "c"], ["a", "b", "d", "c"], ["a", "b", "c", "d", "e"]],
                         ids=["fewer", "another order", "more"])
def test_a_refuses_a_roster_other_than_its_own(tmp_path: Path, roster: list[str]) -> None:
    shared(tmp_path, [(0, "a", True), (1, "b", True), (2, "c", True), (3, "d", True)])
    store = u_frame(["a", "b"], np.ones((2, 3), np.float32))
    with pytest.raises(ProtocolError, match="both parties must hold the same PSI result"):
        with_joined(store, 3, tmp_path, request([2], roster))


def test_a_refuses_a_session_that_leaves_out_a_joined_user(tmp_path: Path) -> None:
    shared(tmp_path, [(0, "a", True), (1, "b", True), (2, "c", True), (3, "d", True)])
    store = u_frame(["a", "b"], np.ones((2, 3), np.float32))
    with pytest.raises(ProtocolError, match="leaving out 1 users who joined"):
        with_joined(store, 3, tmp_path, request([0, 2], ["a", "b", "c", "d"]))
