"""What the whole suite shares: the order its modules run in, and a throwaway PostgreSQL cluster for the tests that
read tables from a database, started once per session."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocol.keys.keyfiles import write_private
from scenarios.launch import free_ports
from tests.support.postgres import Postgres


# the unit modules that take longest (each several times the others; tests/unit/test_bad_inputs.py and the
# PostgreSQL cases run role processes, tests/unit/scenarios/test_plain_quality.py trains both stories)
SLOW_UNIT = {"tests.unit.test_bad_inputs", "tests.unit.protocol.data.test_sql_tables",
             "tests.unit.scenarios.test_plain_quality"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules marked `long` first, then the other modules with integration tests, then the slowest unit modules
    (SLOW_UNIT), then the rest. Under `pytest -n N --dist loadfile --no-loadscope-reorder` (`make test`), where each
    module runs whole on one worker (its module fixtures built once) in this order, the longest start early and the
    short ones fill in at the end."""
    def marked(name: str) -> set[str]:
        return {item.module.__name__ for item in items if item.get_closest_marker(name)}
    long, integration = marked("long"), marked("integration")
    items.sort(key=lambda item: (item.module.__name__ not in long, item.module.__name__ not in integration,
                                 item.module.__name__ not in SLOW_UNIT))


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """Debian's PostgreSQL (`make test` installs it) in a temporary directory on a free loopback port, password
    authentication only; run as the postgres user when the tests run as root (the server refuses root)."""
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not binaries:
        pytest.fail("PostgreSQL is not installed: `make test` installs Debian's postgresql package")
    bin_dir = Path(binaries[-1]).parent
    owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
    as_owner = ["runuser", "-u", owner.pw_name, "--"] if os.geteuid() == 0 else []

    def run(program: str, *args: str) -> None:
        done = subprocess.run([*as_owner, str(bin_dir / program), *args], capture_output=True, text=True)
        if done.returncode:
            pytest.fail(f"{program} failed: {done.stderr or done.stdout}")

    root = Path(tempfile.mkdtemp(prefix="vfrec-pg-"))  # not under pytest's root-only directory: the owner enters it
    os.chown(root, owner.pw_uid, owner.pw_gid)
    password = "test-" + os.urandom(8).hex()
    (root / "pwfile").write_text(password + "\n")
    os.chown(root / "pwfile", owner.pw_uid, owner.pw_gid)
    port = free_ports(1)[0]
    data = root / "data"
    try:
        run("initdb", "-D", str(data), "-U", "vfrec", "--pwfile", str(root / "pwfile"), "--auth", "scram-sha-256",
            "--no-sync", "-E", "UTF8")
        (root / "pwfile").unlink()
        run("pg_ctl", "-D", str(data), "-l", str(root / "server.log"), "-w", "-o",
            f"-k {root} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        secret = Path(tempfile.mkdtemp(prefix="vfrec-pg-password-")) / "password"
        write_private(secret, password.encode() + b"\n")
        yield Postgres(f"postgresql://vfrec@127.0.0.1:{port}/postgres", secret)
        shutil.rmtree(secret.parent)
    finally:
        if (data / "postmaster.pid").exists():
            run("pg_ctl", "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)
