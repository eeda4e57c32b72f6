"""The checkpoint store (protocol/runtime/checkpoint.py): whole or nothing, the last K kept, the newest step all hold,
and the [checkpoint] keys read with errors naming them."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol.errors import ConfigError, StoreError
from protocol.runtime import checkpoint
from protocol.runtime.checkpoint import CheckpointSettings, held, newest_common, read_checkpoint, write_checkpoint
from protocol.settings.config import Table


def write(workdir: Path, step: int, keep: int = 3, data: bytes = b"x") -> Path:
    return write_checkpoint(workdir, "run/1", step, {"role": "party_b", "plan": "p"}, {"w.bin": data}, keep)


def test_a_checkpoint_is_written_whole_and_read_back(tmp_path: Path) -> None:
    directory = write(tmp_path, 4, data=b"weights")
    assert directory == tmp_path / "checkpoints" / "run_1" / "4"
    found, manifest = read_checkpoint(tmp_path, "run/1", 4, "party_b")
    assert found == directory and manifest["files"] == ["w.bin"] and manifest["step"] == 4
    assert (found / "w.bin").read_bytes() == b"weights"
    assert [p.name for p in directory.parent.iterdir()] == ["4"]  # no temporary directory left behind
    with pytest.raises(StoreError, match="is not party_a's checkpoint"):
        read_checkpoint(tmp_path, "run/1", 4, "party_a")


def test_a_write_cut_short_is_not_held_and_a_missing_file_is_named(tmp_path: Path) -> None:
    write(tmp_path, 1)
    root = checkpoint.run_dir(tmp_path, "run/1")
    (root / ".2.dead.tmp").mkdir()  # a crash before the rename: the files are there, the name is not
    (root / ".2.dead.tmp" / "w.bin").write_bytes(b"half")
    (root / "3").mkdir()  # a directory without its manifest is not a checkpoint either
    assert held(tmp_path, "run/1") == [1]
    (root / "1" / "w.bin").unlink()
    with pytest.raises(StoreError, match=r"w\.bin is missing from the checkpoint at step 1"):
        read_checkpoint(tmp_path, "run/1", 1, "party_b")
    write(tmp_path, 5)
    assert not (root / ".2.dead.tmp").exists()  # leftovers go at the next write


def test_only_the_last_k_are_kept_and_a_step_written_again_replaces_the_old(tmp_path: Path) -> None:
    for step in (0, 10, 20, 30, 40):
        write(tmp_path, step, keep=2)
    assert held(tmp_path, "run/1") == [30, 40]
    write(tmp_path, 40, keep=2, data=b"redone")
    assert held(tmp_path, "run/1") == [30, 40]
    assert (checkpoint.run_dir(tmp_path, "run/1") / "40" / "w.bin").read_bytes() == b"redone"


def test_newest_common_is_the_newest_step_every_role_holds() -> None:
    assert newest_common([0, 10, 20], [10, 20, 30], [10, 20]) == 20
    assert newest_common([10, 20], [20, 30], [30]) is None
    assert newest_common([], [1]) is None


def test_the_plan_digest_of_the_newest_checkpoint(tmp_path: Path) -> None:
    assert checkpoint.newest_plan(tmp_path, "run/1") == ""
    write(tmp_path, 3)
    assert checkpoint.newest_plan(tmp_path, "run/1") == "p"
    assert checkpoint.plan_digest({"d": 16, "h": 16}) == checkpoint.plan_digest({"h": 16, "d": 16})


def table(data: dict) -> Table:
    return Table({"checkpoint": data}, Path("a.toml"))


def test_settings_are_read_with_errors_naming_the_key() -> None:
    assert checkpoint.read_settings(table({})) == CheckpointSettings()
    assert checkpoint.read_settings(table({"every_steps": 0, "keep": 4, "rejoin": False})) == \
        CheckpointSettings(0, 4, False)
    for data, message in (({"keep": 1}, r"\[checkpoint\] keep: must be 2 or more"),
                          ({"every_steps": -1}, r"\[checkpoint\] every_steps: must be 0"),
                          ({"every": 5}, r"unknown key \[checkpoint\] every"),
                          ({"rejoin": "yes"}, r"\[checkpoint\] rejoin: expected bool")):
        with pytest.raises(ConfigError, match=message):
            checkpoint.read_settings(table(data))


def test_remove_all_forgets_the_run(tmp_path: Path) -> None:
    write(tmp_path, 1)
    checkpoint.remove_all(tmp_path, "run/1")
    assert held(tmp_path, "run/1") == []
    assert not checkpoint.run_dir(tmp_path, "run/1").exists()
