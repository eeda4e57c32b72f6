import argparse
from pathlib import Path

from party_a.run import main
from protocol.roles import A
from protocol.runtime.cli import Command, run


def serve(args: argparse.Namespace) -> None:
    from party_a.serve import main as serve_main  # FastAPI and torch load only to serve

    serve_main(args.config, args.alone)


def serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--alone", action="store_true",
                        help="serve every known user by A alone (u = 0), to measure what federation costs")


def recommend(args: argparse.Namespace) -> None:
    from party_a.recommend import main as recommend_main

    recommend_main(args.config, args.k, args.out, args.include_bought)


def recommend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--k", type=int, default=10, help="items per user (default 10)")
    parser.add_argument("--out", type=Path, required=True, help="Parquet file to write")
    parser.add_argument("--include-bought", action="store_true", help="keep items the user already bought")


run(A, "Active party: holds the labels, drives PSI and training, evaluates.", main, commands={
    "serve": Command("Serve recommendations over HTTP from the trained model ([serve] in the config).", serve,
                     serve_arguments),
    "recommend": Command("Write top-K for every user of A to a Parquet file.", recommend, recommend_arguments),
})
