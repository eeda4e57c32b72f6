"""The `psi` command of both parties: PSI alone between A and B, full or delta; the coordinator is not involved.

    python -m party_a psi --config a.toml [--delta [--full-if-needed]]
    python -m party_b psi --config b.toml [--delta [--full-if-needed]]

The configs are the parties' training configs. Without `--delta` it is a full PSI (a
fresh secret) that rewrites the state, the shared list, aligned_rows.csv and
summary.json. With `--delta` it is a delta from the state both parties kept; when one
cannot run (psi/mode.py names why) it stops with exit code 2, or with
`--full-if-needed` runs a full PSI instead. Both parties must be started.
"""

from __future__ import annotations

import argparse

from protocol.errors import ConfigError
from protocol.runtime.cli import setup_logging
from protocol.runtime.party import run_party
from protocol.settings.config import PartyBasics
from psi.align import UserIds, run_phase
from psi.mode import DELTA, FULL, Wish
from psi.session import PsiSettings

HELP = ("PSI alone with the other party (the coordinator is not needed): full, or with --delta only the change since "
        "the last PSI; writes <workdir>/psi/shared.parquet.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `psi` command's options."""
    parser.add_argument("--delta", action="store_true",
                        help="a delta from the state both parties kept since their last PSI; when it cannot run, say "
                             "why and stop with exit code 2")
    parser.add_argument("--full-if-needed", action="store_true",
                        help="with --delta: run a full PSI instead when a delta cannot run (no state, states that "
                             "differ, a secret past [psi] key_max_age_days)")


def main(basics: PartyBasics, users: UserIds, settings: PsiSettings, peer: str, args: argparse.Namespace) -> None:
    """Run the `psi` command for the party whose config gave `basics`, `users` and `settings`, with `peer`."""
    if args.full_if_needed and not args.delta:
        raise ConfigError("psi: --full-if-needed goes with --delta (without --delta the PSI is a full one anyway)")
    setup_logging(basics.network.role, basics.workdir)
    ids = users.ids()
    wish = Wish(DELTA if args.delta else FULL, args.full_if_needed)
    run_party(basics, lambda endpoint, pool: run_phase(endpoint, peer, ids, pool, settings, basics.workdir,
                                                       basics.network.key_passphrase, wish), resume=False)
