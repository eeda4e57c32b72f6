import argparse

from party_a.run import main
from protocol.roles import A
from protocol.runtime.cli import Command, run


def serve(args: argparse.Namespace) -> None:
    from party_a.serve import main as serve_main  # FastAPI and torch load only to serve

    serve_main(args.config)


run(A, "Active party: holds the labels, drives PSI and training, evaluates.", main, commands={
    "serve": Command("Serve recommendations over HTTP from the trained model ([serve] in the config).", serve),
})
