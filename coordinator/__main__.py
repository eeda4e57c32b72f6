import argparse
from pathlib import Path

from coordinator.config import load
from coordinator.service import main, model_facts
from protocol.roles import C
from protocol.runtime.cli import Command, run
from protocol.runtime.registry import models_command


def refresh(args: argparse.Namespace) -> None:
    from coordinator.refresh import main as refresh_main

    refresh_main(args.config)


def workdir(config_path: Path) -> Path:
    return load(config_path).workdir


DESCRIPTION = "Coordinator: holds the Paillier key pair and decrypts masked values for the parties."
COMMANDS = {
    "refresh": Command("Serve B's refresh sessions of the stored model's u for A, until stopped.", refresh),
    "models": models_command(C, workdir, model_facts),
}

if __name__ == "__main__":
    run(C, DESCRIPTION, main, COMMANDS)
