from party_b.run import main
from protocol.roles import B
from protocol.runtime.cli import run

run(B, "Passive party: aligns customers with party A and trains tower B on its own columns.", main)
