import argparse

from coordinator.service import main
from protocol.roles import C
from protocol.runtime.cli import Command, run


def refresh(args: argparse.Namespace) -> None:
    from coordinator.refresh import main as refresh_main

    refresh_main(args.config)


run(C, "Coordinator: holds the Paillier key pair and decrypts masked values for the parties.", main, commands={
    "refresh": Command("Serve B's refresh sessions of the stored model's u for A, until stopped.", refresh),
})
