"""Consistent checkpoints, the part every role shares: layout, atomic writes, keep-last-K, what a role holds.

    <workdir>/checkpoints/<run_id>/<step>/manifest.json   run, role, step, the plan's digest, the files
    <workdir>/checkpoints/<run_id>/<step>/...              the role's files (torch state dicts, numpy, msgpack, JSON)

`step` counts the training steps done (0: right after [W0] was built). A proposes a
checkpoint at a step boundary; each role writes its own (party_a/training/checkpoint.py,
party_b/checkpoint.py, coordinator/checkpoint.py) and confirms. A checkpoint counts only
when all three hold it: at a resume the roles agree on the newest step all hold
(`newest_common`). A proposes the next checkpoint only once both others confirmed the
last, so each role's newest-but-one checkpoint is one all three hold; `keep` ≥ 2 always
leaves one. A directory appears whole or not at all: its files are written and fsynced
in a temporary directory, which is renamed (protocol/store/models.py does the same for
models).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from protocol import observe
from protocol.errors import StoreError
from protocol.names import as_name
from protocol.settings.config import Table
from protocol.store.models import MANIFEST, model_file, private_dir, read_json, sync_dir, write_files


@dataclass(frozen=True)
class CheckpointSettings:
    """[checkpoint]: every `every_steps` training steps (0: only at epoch ends) and at every epoch's end, keeping the
    last `keep`; `rejoin`: when a peer is lost, roll back to the last checkpoint and wait up to [network]
    peer_timeout for it to come back (false: stop at once, as without checkpoints); `max_rollbacks`: how many times
    one process rolls back before it stops instead (a peer that keeps resuming would otherwise hold the run in a
    loop)."""

    every_steps: int = 50
    keep: int = 3
    rejoin: bool = True
    max_rollbacks: int = 10


def read_settings(root: Table) -> CheckpointSettings:
    """The [checkpoint] table, every key optional."""
    t = root.sub("checkpoint")
    d = CheckpointSettings()
    settings = CheckpointSettings(every_steps=t.take("every_steps", int, d.every_steps),
                                  keep=t.take("keep", int, d.keep), rejoin=t.take("rejoin", bool, d.rejoin),
                                  max_rollbacks=t.take("max_rollbacks", int, d.max_rollbacks))
    t.finish()
    if settings.every_steps < 0:
        raise t.error("every_steps", f"must be 0 (only at the end of each epoch) or more, got {settings.every_steps}")
    if settings.keep < 2:
        raise t.error("keep", f"must be 2 or more (the newest may not be held by every role yet), got {settings.keep}")
    if settings.max_rollbacks < 1:
        raise t.error("max_rollbacks", f"must be 1 or more (set rejoin = false never to roll back), got "
                                       f"{settings.max_rollbacks}")
    return settings


def run_dir(workdir: Path, run_id: str) -> Path:
    """Where a role keeps the checkpoints of run `run_id` (made a safe name: protocol/names.py)."""
    return workdir / "checkpoints" / as_name(run_id)


def held(workdir: Path, run_id: str) -> list[int]:
    """The steps of the whole checkpoints this role holds for the run, oldest first."""
    root = run_dir(workdir, run_id)
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and (p / MANIFEST).is_file())


def newest_common(*holdings: list[int]) -> int | None:
    """The newest step every role holds, or None."""
    common = set(holdings[0]).intersection(*holdings[1:]) if holdings else set()
    return max(common) if common else None


def plan_digest(plan: dict) -> str:
    """A short digest of a layer plan (its message form): every role's checkpoints must be of the same plan."""
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:16]


def write_checkpoint(workdir: Path, run_id: str, step: int, manifest: dict, files: dict[str, bytes],
                     keep: int) -> Path:
    """Write this role's checkpoint at `step` whole (replacing one of that step this role wrote before, which no
    other role held), then remove all but the newest `keep`."""
    root = run_dir(workdir, run_id)
    private_dir(root.parent)
    private_dir(root)
    final = root / str(step)
    tmp = root / f".{step}.{secrets.token_hex(4)}.tmp"
    write_files(tmp, {**files, MANIFEST: json.dumps({**manifest, "run_id": run_id, "step": step,
                                                     "files": sorted(files)}, indent=2).encode()})
    if final.exists():
        final.rename(root / f".{step}.{secrets.token_hex(4)}.old")
    tmp.rename(final)
    sync_dir(root)
    steps = held(workdir, run_id)
    for old in steps[:-keep]:
        shutil.rmtree(root / str(old), ignore_errors=True)
    for leftover in root.glob(".*"):  # a write cut short by a crash, or a replaced checkpoint
        shutil.rmtree(leftover, ignore_errors=True)
    observe.checkpoint_written()
    return final


def read_checkpoint(workdir: Path, run_id: str, step: int, role: str) -> tuple[Path, dict]:
    """The directory and manifest of this role's checkpoint at `step`, checked to be whole and its own."""
    directory = run_dir(workdir, run_id) / str(step)
    path = directory / MANIFEST
    manifest = read_json(path, f"{role} holds no checkpoint at step {step}")
    if manifest.get("role") != role or manifest.get("run_id") != run_id or manifest.get("step") != step:
        raise StoreError(f"{path} is not {role}'s checkpoint of run {run_id!r} at step {step}")
    for name in manifest["files"]:
        if not (directory / name).is_file():
            raise StoreError(f"{directory / name} is missing from the checkpoint at step {step}")
    return directory, manifest


def checkpoint_json(directory: Path, name: str) -> dict:
    """A JSON file of a checkpoint."""
    try:
        return json.loads(model_file(directory, name))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(f"{directory / name} is corrupt: {exc}") from None


def newest_plan(workdir: Path, run_id: str) -> str:
    """The plan digest of this role's newest checkpoint ("" when it holds none)."""
    steps = held(workdir, run_id)
    if not steps:
        return ""
    return json.loads((run_dir(workdir, run_id) / str(steps[-1]) / MANIFEST).read_text()).get("plan", "")


def remove_all(workdir: Path, run_id: str) -> None:
    """Forget the run's checkpoints (it finished: its model is stored)."""
    shutil.rmtree(run_dir(workdir, run_id), ignore_errors=True)
