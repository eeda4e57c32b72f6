import argparse

from party_b.run import main
from protocol.roles import B
from protocol.runtime.cli import Command, run


def refresh(args: argparse.Namespace) -> None:
    from party_b.refresh import main as refresh_main  # torch loads only to refresh

    refresh_main(args.config, args.all)


def refresh_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--all", action="store_true", help="every shared user, not only those whose row changed")


run(B, "Passive party: aligns customers with party A and trains tower B on its own columns.", main, commands={
    "refresh": Command("Recompute B's contribution u of changed users for A's serving store (A serving and the "
                       "coordinator's refresh service running).", refresh, refresh_arguments),
})
