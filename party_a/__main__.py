import argparse
from pathlib import Path

from party_a.config import load
from party_a.run import main
from protocol.roles import A, B
from protocol.runtime.cli import Command, run
from protocol.runtime.registry import models_command
from psi import command as psi_command


def serve(args: argparse.Namespace) -> None:
    from party_a.serving.http import main as serve_main  # FastAPI and torch load only to serve

    serve_main(args.config, args.alone)


def serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--alone", action="store_true",
                        help="serve every known user by A alone (u = 0), to measure what federation costs")


def recommend(args: argparse.Namespace) -> None:
    from party_a.serving.recommend import main as recommend_main

    recommend_main(args.config, args.k, args.out, args.include_bought)


def recommend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--k", type=int, default=10, help="items per user (default 10)")
    parser.add_argument("--out", type=Path, required=True, help="Parquet file to write")
    parser.add_argument("--include-bought", action="store_true", help="keep items the user already bought")


def psi_only(args: argparse.Namespace) -> None:
    cfg = load(args.config)
    psi_command.main(cfg.basics, cfg.users, cfg.psi, B, args)


def workdir(config_path: Path) -> Path:
    return load(config_path).basics.workdir


def model_facts(directory: Path, manifest: dict) -> dict[str, str]:
    from party_a.serving.store import model_facts as facts  # torch loads only for the models' columns

    return facts(directory, manifest)


DESCRIPTION = "Active party: holds the labels, drives PSI and training, evaluates."
COMMANDS = {
    "serve": Command("Serve recommendations over HTTP from the trained model ([serve] in the config).", serve,
                     serve_arguments),
    "recommend": Command("Write top-K for every user of A to a Parquet file.", recommend, recommend_arguments),
    "psi": Command(psi_command.HELP, psi_only, psi_command.add_arguments),
    "models": models_command(A, workdir, model_facts),
}

if __name__ == "__main__":
    run(A, DESCRIPTION, main, COMMANDS)
