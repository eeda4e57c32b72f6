from party_a.run import main
from protocol.roles import A
from protocol.runtime.cli import run

run(A, "Active party: holds the labels, drives PSI and training, evaluates.", main)
