from party_b.run import main
from protocol.runtime.cli import run

run("party_b", "Passive party: aligns customers with party A and trains tower B on its own columns.", main)
