"""The import contract in pyproject.toml holds, and breaks when a forbidden import is added.

The roles never import each other, the shared contract and PSI import no role,
protocol/crypto imports neither torch nor grpc (directly or through another module), and
protocol's layers import only downward (docs/design.md, "How the code is laid out").
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("protocol", "psi", "party_a", "party_b", "coordinator")
LINT = str(Path(sys.executable).with_name("lint-imports"))
LAYERS = "protocol's layers import only downward"


def lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([LINT, "--no-cache"], cwd=root, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(root), "PATH": str(Path(sys.executable).parent)})


def test_the_contract_holds() -> None:
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("party_a/models/model.py", "import party_b.tower", "the roles never import each other"),
    ("coordinator/decryption_log.py", "from party_a import data", "the roles never import each other"),
    ("psi/ecdh.py", "import party_a.data.sampler", "the shared contract and PSI import no role"),
    ("protocol/crypto/fixedpoint.py", "import torch", "protocol.crypto imports neither torch nor grpc"),
    ("protocol/crypto/fixedpoint.py", "from protocol.net import transport", "protocol.crypto imports neither torch "
                                                                            "nor grpc"),
    ("protocol/wire/codec.py", "import protocol.keys.keyfiles", LAYERS),
    ("protocol/keys/keyfiles.py", "from protocol.settings import config", LAYERS),
    ("protocol/settings/config.py", "import protocol.store.models", LAYERS),
    ("protocol/store/models.py", "from protocol.compute import workers", LAYERS),
    ("protocol/compute/workers.py", "from protocol.crypto import paillier", LAYERS),
    ("protocol/crypto/fixedpoint.py", "from protocol.data import tables", LAYERS),
    ("protocol/data/towers.py", "from protocol import messages", LAYERS),
    ("protocol/net/transport.py", "from protocol import messages", LAYERS),
    ("protocol/messages/plan.py", "from protocol.layer import steps", LAYERS),
    ("protocol/layer/timing.py", "from protocol.runtime import checkpoint", LAYERS),
    ("protocol/errors.py", "from protocol import names", LAYERS),
])
def test_a_forbidden_import_breaks_it(tmp_path: Path, module: str, line: str, contract: str) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}\n")
    result = lint(tmp_path)
    assert result.returncode != 0
    assert f"{contract} BROKEN" in result.stdout, result.stdout


def test_the_local_backend_never_imports_ray() -> None:
    """`make demo` needs no Ray: the roles' entry points and a local pool load without it."""
    code = ("import sys, party_a.run, party_b.run, coordinator.service, coordinator.refresh, party_b.refresh; "
            "from protocol.compute.pool import open_pool; from protocol.settings.config import Compute; "
            "open_pool(Compute(workers=1)).close(); assert 'ray' not in sys.modules, 'ray was imported'")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(ROOT), "PATH": str(Path(sys.executable).parent)})
    assert result.returncode == 0, result.stderr
