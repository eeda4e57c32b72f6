from coordinator.service import main
from protocol.roles import C
from protocol.runtime.cli import run

run(C, "Coordinator: holds the Paillier key pair and decrypts masked values for the parties.", main)
