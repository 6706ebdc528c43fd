"""The errors edgeseg raises for something the user can fix, in domain words.

Every one is an :class:`EdgesegError` (``except EdgesegError`` catches them all). The command line prints the
message on one line and exits with the code of its class (the table in ``edgeseg/cli/app.py``, docs/cli.md):
a usage or input error 2, a failed verification 3, a broken limit 1, something asked for not done 4.
"""


class EdgesegError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero (2 unless a subclass
    says otherwise)."""


class UsageError(EdgesegError):
    """Option values that cannot work, alone or together (``pass exactly one of --ratio and --macs``)."""


class InputError(EdgesegError):
    """Input that cannot be used: unreadable or invalid data, checkpoint, bundle manifest, results, baseline."""


class VerificationError(EdgesegError):
    """An integrity check failed: a bundle file's sha256, the manifest's digest, a file that leaves the bundle
    or loads external data, embedded preprocessing unlike the manifest's. The bundle is not used."""


class LimitBroken(EdgesegError):
    """A Dice or latency limit is broken (the gate failed)."""


class Incomplete(EdgesegError):
    """The command wrote its results, but something asked for was not done: an artifact, a baseline or a
    latency not measured (bench), a Dice limit not met within the search budget (compress)."""
