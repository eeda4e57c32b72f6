from party_a.run import main
from protocol.runtime.cli import run

run("party_a", "Active party: holds the labels, drives PSI and training, evaluates.", main)
