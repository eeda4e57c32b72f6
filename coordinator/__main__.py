from coordinator.service import main
from protocol.runtime.cli import run

run("coordinator", "Coordinator: holds the Paillier key pair and decrypts masked values for the parties.", main)
