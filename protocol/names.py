"""The one rule for a name that becomes part of a path: model IDs, run directories, key files.

A safe name is 1 to 200 characters of letters, digits, '_', '.' and '-', starting with
a letter, a digit or '_': it holds no '/' and is never '.' or '..', so joined to a
directory it names an entry of that directory and nothing else. Every such name that
comes from a peer (a model ID in `Finish`, `RunDone`, `RefreshRequest`, `RefreshDone`)
is checked with `check_name` when the message is parsed, and the stores check again
before they write; names made from local text (a run ID) go through `as_name`.
"""

from __future__ import annotations

import re

SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")
RULE = "1-200 of A-Z a-z 0-9 _ . -, not starting with '.' or '-'"


def is_safe_name(value: object) -> bool:
    """Whether `value` is a string that may be joined to a directory as one entry of it."""
    return isinstance(value, str) and SAFE_NAME.fullmatch(value) is not None


def check_name(value: object, field: str) -> str:
    """`value` if it is a safe name; otherwise a ValueError naming `field` (the caller adds who sent it)."""
    if not is_safe_name(value):
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise ValueError(f"field {field!r} = {shown} is not a safe name ({RULE})")
    return value


def as_name(text: str) -> str:
    """A safe name made from local text (a run ID): unsafe characters become '_', a leading '.' or '-' gets a '_'
    before it, and it is cut to 200 characters."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", text)
    if not name or name[0] in ".-":
        name = "_" + name
    return name[:200]
