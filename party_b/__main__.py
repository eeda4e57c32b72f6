import argparse
from pathlib import Path

from party_b.config import load
from party_b.run import main
from protocol.roles import A, B
from protocol.runtime.cli import Command, run
from protocol.runtime.registry import models_command
from psi import command as psi_command


def refresh(args: argparse.Namespace) -> None:
    from party_b.refresh import main as refresh_main  # torch loads only to refresh

    refresh_main(args.config, args.all)


def refresh_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--all", action="store_true", help="every shared user, not only those whose row changed")


def psi_only(args: argparse.Namespace) -> None:
    cfg = load(args.config)
    psi_command.main(cfg.basics, cfg.users, cfg.psi, A, args)


def workdir(config_path: Path) -> Path:
    return load(config_path).basics.workdir


def model_facts(directory: Path, manifest: dict) -> dict[str, str]:
    from party_b.store import model_facts as facts  # torch loads only for the models' columns

    return facts(directory, manifest)


DESCRIPTION = "Passive party: aligns customers with party A and trains tower B on its own columns."
COMMANDS = {
    "refresh": Command("Recompute B's contribution u of changed users for A's serving store (A serving and the "
                       "coordinator's refresh service running).", refresh, refresh_arguments),
    "psi": Command(psi_command.HELP, psi_only, psi_command.add_arguments),
    "models": models_command(B, workdir, model_facts),
}

if __name__ == "__main__":
    run(B, DESCRIPTION, main, COMMANDS)
