# -*- test-case-name: tests.test_tap -*-
"""
Option values shared by ``twistd dspring`` and the ``dspring`` command.
"""

from __future__ import annotations

import os

from attrs import frozen
from twisted.python.filepath import FilePath

from ..errors import DigitalSpringError
from ..identity import InvalidPeerID, PeerID
from ..transport import InvalidAddress, split_address

DEFAULT_DATA_DIR = "~/.dspring"

#: Where a node listens unless told otherwise.
DEFAULT_LISTEN = "tcp:7655"

#: Where an onion-only node listens unless told otherwise: an onion
#: service on port 7655, with the key kept in the data directory.
DEFAULT_ONION_LISTEN = "tor:7655"

#: The file in the data directory that lists bootstrap peers, one
#: ``PEER_ID@TRANSPORT:ADDRESS`` a line (``#`` starts a comment).
BOOTSTRAP_FILE_NAME = "bootstrap.txt"


class BadOption(DigitalSpringError):
    """
    An option's value cannot be used.
    """


@frozen
class BootstrapPeer:
    """
    A peer to join the network through: its ID and one of its addresses.
    """

    peer_id: PeerID
    address: str

    @classmethod
    def parse(cls, text: str) -> BootstrapPeer:
        """
        Read ``PEER_ID@TRANSPORT:ADDRESS``.

        :raises BadOption: saying what is wrong.
        """
        peer, sep, address = text.partition("@")
        if not sep:
            raise BadOption(f"{text!r} is not of the form PEER_ID@TRANSPORT:ADDRESS")
        try:
            peer_id = PeerID.parse(peer)
            split_address(address)
        except (InvalidPeerID, InvalidAddress) as e:
            raise BadOption(f"bad bootstrap peer {text!r}: {e}") from None
        return cls(peer_id, address)

    def __str__(self) -> str:
        return f"{self.peer_id}@{self.address}"


def read_bootstrap_file(data_dir: FilePath[str]) -> list[BootstrapPeer]:
    """
    The bootstrap peers listed in ``DATA_DIR/bootstrap.txt``; none when the
    file is missing.

    :raises BadOption: naming the line that cannot be read.
    """
    path = data_dir.child(BOOTSTRAP_FILE_NAME)
    try:
        with open(path.path, encoding="utf-8") as f:
            lines = f.read(1024 * 1024).splitlines()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as e:
        raise BadOption(f"cannot read {path.path}: {e}") from None
    peers = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            peers.append(BootstrapPeer.parse(text))
        except BadOption as e:
            raise BadOption(f"{path.path}, line {number}: {e}") from None
    return peers


def data_dir_path(text: str) -> FilePath[str]:
    """
    The data directory named by an option: ``~`` is expanded.
    """
    return FilePath(os.path.abspath(os.path.expanduser(text)))


def read_passphrase_file(path: str) -> bytes:
    """
    The passphrase in a file: its first line, without the line ending.

    :raises BadOption: when the file cannot be read or its first line is
        empty.
    """
    try:
        with open(os.path.expanduser(path), "rb") as f:
            line = f.readline(64 * 1024)
    except OSError as e:
        raise BadOption(f"cannot read the passphrase file {path}: {e.strerror}") from None
    return _first_line(line, f"the passphrase file {path}")


def _first_line(line: bytes, source: str) -> bytes:
    passphrase = line.rstrip(b"\r\n")
    if not passphrase:
        raise BadOption(f"{source} is empty")
    return passphrase


def read_passphrase_fd(fd: int) -> bytes:
    """
    The passphrase on an open file descriptor (a pipe from a secret store,
    say): its first line, without the line ending.  The descriptor is
    closed, except a standard one (0 to 2), which is pointed at
    ``/dev/null`` instead: closed, its number would go to the next file
    opened, twistd's log, and daemonizing points 0 to 2 at ``/dev/null``.

    :raises BadOption: when it cannot be read or its first line is empty.
    """
    standard = fd <= 2
    try:
        with open(fd, "rb", closefd=not standard) as f:
            line = f.readline(64 * 1024)
    except OSError as e:
        raise BadOption(
            f"cannot read a passphrase from file descriptor {fd}: {e.strerror}"
        ) from None
    finally:
        if standard:
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, fd)
            os.close(null)
    return _first_line(line, f"the passphrase on file descriptor {fd}")


def read_systemd_credential(name: str) -> bytes:
    """
    The passphrase in the systemd credential ``name``: the file of that
    name in ``$CREDENTIALS_DIRECTORY``, which systemd fills (decrypting
    ``LoadCredentialEncrypted=``) for the service alone, in memory.

    :raises BadOption: when there are no credentials, no such credential,
        or it is empty.
    """
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise BadOption(
            f"no systemd credentials ($CREDENTIALS_DIRECTORY is not set) to read "
            f"{name!r} from: --passphrase-credential is for a systemd service with "
            f"LoadCredentialEncrypted={name}:FILE"
        )
    if not name or "/" in name or name in (".", ".."):
        raise BadOption(f"{name!r} is not a credential name")
    path = os.path.join(directory, name)
    try:
        with open(path, "rb") as f:
            line = f.readline(64 * 1024)
    except OSError as e:
        raise BadOption(f"cannot read the credential {name!r} ({path}): {e.strerror}") from None
    return _first_line(line, f"the credential {name!r}")


def check_listen(text: str) -> str:
    """
    Check the form of a ``--listen`` value, ``TRANSPORT:DESCRIPTION``.

    :raises BadOption: when it has no transport name.
    """
    try:
        split_address(text)
    except InvalidAddress as e:
        raise BadOption(f"bad --listen value: {e}") from None
    return text


#: Multipliers of the suffixes a rate may have: decimal, as network rates
#: are given (``1.25M`` is 1,250,000 bytes/s, 10 Mbit/s).
_RATE_SUFFIXES = {"": 1, "k": 1_000, "K": 1_000, "M": 1_000_000, "G": 1_000_000_000}


def parse_rate(text: str) -> float:
    """
    A rate in bytes per second: a number, optionally followed by ``k``,
    ``M`` or ``G`` (thousands, millions, billions), e.g. ``1.25M``.

    :raises BadOption: when it is not a positive number so written.
    """
    value = text.strip()
    suffix = value[-1:] if value[-1:] in _RATE_SUFFIXES else ""
    number = value[: len(value) - len(suffix)]
    try:
        rate = float(number) * _RATE_SUFFIXES[suffix]
    except ValueError:
        rate = 0.0
    if not 0 < rate < float("inf"):
        raise BadOption(
            f"{text!r} is not a rate in bytes per second above 0 (a number, or one "
            "ending in k, M or G, e.g. 1.25M)"
        )
    return rate


def parse_size(text: str) -> int:
    """
    A number of bytes: a whole number, optionally followed by ``k``, ``M``
    or ``G`` (thousands, millions, billions), e.g. ``500M``.

    :raises BadOption: when it is not a positive size so written.
    """
    value = text.strip()
    suffix = value[-1:] if value[-1:] in _RATE_SUFFIXES else ""
    number = value[: len(value) - len(suffix)]
    try:
        size = float(number) * _RATE_SUFFIXES[suffix]
    except ValueError:
        size = 0.0
    if not 1 <= size < float("inf"):
        raise BadOption(
            f"{text!r} is not a size in bytes of 1 or more (a number, or one ending in k, "
            "M or G, e.g. 500M)"
        )
    return int(size)
