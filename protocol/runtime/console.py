"""The `vfrec` console command: `vfrec ROLE [COMMAND] [arguments]` runs `python -m <role> [COMMAND] [arguments]`.

ROLE is party-a, party-b or coordinator (party_a and party_b also do). The role's
__main__ runs as it does under `python -m` (runpy), with its usage lines naming
`vfrec ROLE`. protocol imports no role (pyproject.toml's import contract): the roles
are found by name when the command runs, and `vfrec --help` reads each role's
DESCRIPTION and COMMANDS from its __main__ without running it.
"""

from __future__ import annotations

import importlib
import runpy
import sys

from protocol.runtime import cli

ROLES = {"party-a": "party_a", "party-b": "party_b", "coordinator": "coordinator"}
USAGE = "usage: vfrec ROLE [COMMAND] [--config FILE] [arguments]   (vfrec ROLE --help for a role's)"


def module_of(name: str) -> str | None:
    """The role module `name` means (party-a or party_a: party_a), None for anything else."""
    return ROLES.get(name.replace("_", "-"))


def overview() -> str:
    """`vfrec --help`: every role with its description and its commands."""
    lines = [USAGE, "", "roles and their commands (without a command, the role's default job runs):"]
    for name, module in ROLES.items():
        main = importlib.import_module(f"{module}.__main__")
        lines += ["", f"  {name:<12} {main.DESCRIPTION}", f"    {'(none)':<12} the default job: "
                  f"vfrec {name} --config FILE"]
        lines += [f"    {command:<12} {spec.help}" for command, spec in main.COMMANDS.items()]
    return "\n".join(lines)


def main() -> None:
    """Run the role the first argument names, with the rest of the command line."""
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(overview(), file=sys.stdout if args else sys.stderr)
        sys.exit(0 if args else 2)
    module = module_of(args[0])
    if module is None:
        print(f"{USAGE}\nvfrec: unknown role {args[0]!r}: one of {', '.join(ROLES)}", file=sys.stderr)
        sys.exit(2)
    prog = f"vfrec {args[0].replace('_', '-')}"
    cli.run_as(prog)
    sys.argv = [prog, *args[1:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
