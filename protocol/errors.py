"""Errors a user can act on. Each message names the file, key, column, row or peer at fault."""


class VfrecError(Exception):
    """Base of every error the command-line entry points report without a traceback."""

    exit_code = 1


class ConfigError(VfrecError):
    """The config file is missing, unreadable or holds a wrong key or value."""

    exit_code = 2


class DataError(VfrecError):
    """An input table is missing, or a column or row in it is wrong."""

    exit_code = 2


class PeerError(VfrecError):
    """A peer is unreachable, refused us, or sent something the protocol does not allow."""


class PeerLost(PeerError):
    """A peer is gone (its process stopped, or it is silent past the peer timeout) or is resuming from a checkpoint:
    with [checkpoint] rejoin the survivors roll back and wait for it (protocol/runtime/resume.py)."""


class ProtocolError(VfrecError):
    """A protocol step cannot go on (empty intersection, bound exceeded, refused request)."""


class StoreError(VfrecError):
    """A model store is missing, incomplete, corrupt, or holds another model than the one asked for."""

    exit_code = 2


class StateError(VfrecError):
    """What a party kept from its last PSI is missing, stale or does not belong with the peer's: a delta PSI cannot
    run, a full one is needed."""

    exit_code = 2
