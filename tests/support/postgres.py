"""What the session fixture `postgres` (tests/conftest.py) gives the tests: where its throwaway cluster listens."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Postgres:
    url: str  # postgresql://vfrec@127.0.0.1:<port>/postgres: the test user, a superuser, with a password
    password_file: Path  # mode 0600
