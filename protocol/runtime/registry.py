"""A role's model registry: list its stored models, promote one, roll back, prune old ones.

`python -m <role> models list|promote MODEL_ID|rollback|prune --keep N --config FILE`
works on `<workdir>/models/` (protocol/store/models.py). Each organisation runs it on
its own host, for the same model ID at all three roles: A, B and the coordinator must
serve the same model, and a refresh session between them refuses otherwise.

`models/HISTORY` holds a line "time model_id action" for every change of CURRENT
(trained, promote, rollback) and every prune. Replayed, it gives the models that were
in service one after another: a promote adds one, a rollback takes the last one off,
so a second rollback goes back one further. The previous model is the last one before
the current one that is still stored; a prune never removes it, nor the current one.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from protocol.errors import StoreError
from protocol.names import check_name
from protocol.runtime.cli import Command, common_arguments
from protocol.store.models import CURRENT, HISTORY, make_current, models_lock, read_manifest, record

# a role's columns of `models list` for one model: column name -> text (its directory and manifest given)
Facts = Callable[[Path, dict], dict[str, str]]


@dataclass(frozen=True)
class Stored:
    """One directory of `models/`: its manifest, or why it is not a whole model."""

    model_id: str
    directory: Path
    created: float  # the manifest's "created", or the directory's mtime when there is no manifest
    manifest: dict | None
    problem: str | None


def models_root(workdir: Path) -> Path:
    return workdir / "models"


def stored_models(workdir: Path, role: str) -> list[Stored]:
    """Every model directory of `workdir`, newest first (temporary and pruned ones, hidden, are left out)."""
    root = models_root(workdir)
    if not root.is_dir():
        return []
    found = []
    for directory in root.iterdir():
        if not directory.is_dir() or directory.name.startswith("."):
            continue
        try:
            manifest = read_manifest(directory, role)
            found.append(Stored(directory.name, directory, float(manifest.get("created", 0)), manifest, None))
        except StoreError as exc:
            found.append(Stored(directory.name, directory, directory.stat().st_mtime, None, str(exc)))
    return sorted(found, key=lambda s: (s.created, s.model_id), reverse=True)


def current_id(workdir: Path) -> str | None:
    """The model ID CURRENT names, None without one."""
    try:
        return (models_root(workdir) / CURRENT).read_text().strip() or None
    except FileNotFoundError:
        return None


def history(workdir: Path) -> list[tuple[str, str, str]]:
    """HISTORY's lines as (time, model_id, action); none before the first model."""
    path = models_root(workdir) / HISTORY
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if len(fields) != 3:
            raise StoreError(f"{path} line {number} is not 'time model_id action': {line[:120]!r}")
        lines.append((fields[0], fields[1], fields[2]))
    return lines


def in_service(workdir: Path) -> list[str]:
    """The models that were in service one after another, the current one last, as HISTORY's promotes and rollbacks
    leave them (a CURRENT written by hand, or before HISTORY existed, counts as promoted)."""
    stack: list[str] = []
    for _, model_id, action in history(workdir):
        if action == "rollback":
            while stack and stack[-1] != model_id:
                stack.pop()
        if action in ("trained", "promote", "rollback") and (not stack or stack[-1] != model_id):
            stack.append(model_id)
    current = current_id(workdir)
    if current is not None and (not stack or stack[-1] != current):
        stack.append(current)
    return stack


def previous_id(workdir: Path) -> str | None:
    """The model a rollback goes back to: the last one in service before the current one that is still stored."""
    stack = in_service(workdir)
    current = stack[-1] if stack else None
    return next((m for m in reversed(stack[:-1]) if m != current and (models_root(workdir) / m).is_dir()), None)


def whole(workdir: Path, role: str, model_id: str, doing: str) -> Path:
    """The directory of stored model `model_id`, checked to be whole; a StoreError naming it and the store
    otherwise."""
    root = models_root(workdir)
    try:
        check_name(model_id, "model_id")
    except ValueError as exc:
        raise StoreError(f"cannot {doing} in {root}: {exc}") from None
    directory = root / model_id
    if not directory.is_dir():
        known = ", ".join(s.model_id for s in stored_models(workdir, role)) or "none"
        raise StoreError(f"cannot {doing}: no model {model_id!r} in {root} (stored: {known})")
    try:
        read_manifest(directory, role)
    except StoreError as exc:
        raise StoreError(f"cannot {doing}: model {model_id!r} in {directory} is not whole: {exc}") from None
    return directory


def promote(workdir: Path, role: str, model_id: str) -> str | None:
    """Make `model_id` the model in service; returns the one it replaces (None: none was, or it already is)."""
    root = models_root(workdir)
    whole(workdir, role, model_id, f"promote {model_id!r}")
    with models_lock(root):
        before = current_id(workdir)
        if before == model_id:
            return None
        make_current(root, model_id, "promote")
    return before


def rollback(workdir: Path, role: str) -> tuple[str, str]:
    """Put the previously current model back in service; returns (the model taken out, the one back in)."""
    root = models_root(workdir)
    if not root.is_dir():
        raise StoreError(f"cannot roll back: {root} does not exist ({role} has stored no model)")
    with models_lock(root):
        current = current_id(workdir)
        if current is None:
            raise StoreError(f"cannot roll back: {root / CURRENT} is missing ({role} has no model in service)")
        previous = previous_id(workdir)
        if previous is None:
            raise StoreError(f"cannot roll back: {root / HISTORY} names no stored model in service before "
                             f"{current!r}")
        whole(workdir, role, previous, f"roll back to {previous!r}")
        make_current(root, previous, "rollback")
    return current, previous


def prune(workdir: Path, role: str, keep: int) -> list[str]:
    """Remove the oldest stored models beyond the `keep` newest, never the current one nor the previous one; returns
    the removed IDs. A model is renamed out of sight before it is deleted, so none is ever seen half removed."""
    if keep < 0:
        raise StoreError(f"--keep must be 0 or more, got {keep}")
    root = models_root(workdir)
    removed: list[str] = []
    if not root.is_dir():
        return removed
    with models_lock(root):
        spared = {current_id(workdir), previous_id(workdir)}
        for stored in stored_models(workdir, role)[keep:]:
            if stored.model_id in spared:
                continue
            hidden = root / f".{stored.model_id}.pruned-{secrets.token_hex(3)}"
            os.replace(stored.directory, hidden)
            shutil.rmtree(hidden)
            record(root, stored.model_id, "pruned")
            removed.append(stored.model_id)
    return removed


def figure(value: float | None, digits: int = 3) -> str:
    """A metric for the table; "-" where the model has none."""
    return "-" if value is None else f"{value:.{digits}f}"


def epsilon_text(privacy: dict | None) -> str:
    """ε a model's noise defence spent ("off" without one; "-" for a model stored before manifests kept it)."""
    if privacy is None:
        return "-"
    return "off" if privacy.get("epsilon") is None else f"{privacy['epsilon']:.2f}"


def table_rows(path: Path) -> str:
    """The number of rows of a stored Parquet table, from its footer (the table is not read)."""
    try:
        return str(pq.ParquetFile(path).metadata.num_rows)
    except (OSError, ValueError):
        return "?"


def model_table(workdir: Path, role: str, facts: Facts) -> str:
    """`models list`: one row per stored model, newest first: ID, creation time (UTC), whether in service or the
    rollback's target, the role's own columns, and what is wrong with a directory that is not a whole model."""
    models = stored_models(workdir, role)
    if not models:
        return f"no models in {models_root(workdir)}"
    current, previous = current_id(workdir), previous_id(workdir)
    rows = []
    for s in models:
        status = "current" if s.model_id == current else "previous" if s.model_id == previous else ""
        row = {"model_id": s.model_id, "created (UTC)": time.strftime("%Y-%m-%d %H:%M", time.gmtime(s.created)),
               "service": status}
        row.update(facts(s.directory, s.manifest) if s.manifest is not None else {})
        if s.problem is not None:
            row["note"] = f"not whole: {s.problem}"
        rows.append(row)
    columns = list(dict.fromkeys(name for row in rows for name in row if name != "note"))
    columns += ["note"] * any("note" in row for row in rows)
    widths = {c: max(len(c), *(len(row.get(c, "")) for row in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns).rstrip()]
    lines += ["  ".join(row.get(c, "-" if c != "note" else "").ljust(widths[c]) for c in columns).rstrip()
              for row in rows]
    return "\n".join(lines)


def models_command(role: str, workdir_of: Callable[[Path], Path], facts: Facts) -> Command:
    """The `models` command of `role`: `workdir_of(config_path)` is its work directory, `facts` its columns."""

    def main(args: argparse.Namespace) -> None:
        workdir = workdir_of(args.config)
        if args.action == "list":
            print(model_table(workdir, role, facts))
        elif args.action == "promote":
            before = promote(workdir, role, args.model_id)
            print(f"{role}: model {args.model_id} in service" + (f" (was {before})" if before else
                                                                   " (already was, or none before)"))
        elif args.action == "rollback":
            out, back = rollback(workdir, role)
            print(f"{role}: rolled back from {out} to {back}")
        else:
            removed = prune(workdir, role, args.keep)
            print(f"{role}: pruned {len(removed)} model(s)" + (f": {', '.join(removed)}" if removed else ""))

    def arguments(parser: argparse.ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True,
                                        help="list, promote MODEL_ID, rollback or prune --keep N")
        for name, text in (("list", "the stored models, newest first, the one in service marked"),
                           ("promote", "make MODEL_ID the model in service (after checking it is whole)"),
                           ("rollback", "put the model in service before the current one back"),
                           ("prune", "remove the oldest models beyond the N newest, never the current or the "
                                     "previous one")):
            sub = actions.add_parser(name, help=text, description=text)
            common_arguments(sub)
            if name == "promote":
                sub.add_argument("model_id", metavar="MODEL_ID")
            if name == "prune":
                sub.add_argument("--keep", type=int, required=True, metavar="N", help="how many of the newest to keep")

    return Command("The stored models (<workdir>/models/): list, promote, rollback, prune; each organisation runs "
                   "promote and rollback on its own host for the same model ID.", main, arguments)
