# -*- test-case-name: tests.test_keyfile -*-
"""
The key file: an identity on disk, encrypted under a passphrase.

The file is a magic line followed by JSON, so that a person who opens it sees
what it is, and a truncated file is told apart from a foreign one::

    digitalspring-identity
    {"version": 1,
     "peer_id": "...", "encryption": "argon2id-xsalsa20poly1305",
     "kdf": {"opslimit": 3, "memlimit": 268435456, "salt": "..."},
     "box": "...", "checksum": "..."}

The peer ID is in clear so that ``dspring id`` needs no passphrase.  The
checksum (BLAKE2b over the other fields) tells a damaged file from a wrong
passphrase, which the SecretBox alone cannot: both fail its MAC.  A file with
``"encryption": "none"`` holds the seed in clear (``"seed"``), for servers and
tests that ask for it explicitly.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import unicodedata
from typing import Any

from attrs import frozen
from nacl.exceptions import CryptoError
from nacl.pwhash import argon2id
from nacl.secret import SecretBox
from nacl.utils import random as random_bytes
from twisted.python.filepath import FilePath

from ..errors import DigitalSpringError
from ._peerid import Identity, InvalidPeerID, PeerID

MAGIC = b"digitalspring-identity\n"
VERSION = 1
ENCRYPTED = "argon2id-xsalsa20poly1305"
UNENCRYPTED = "none"

#: No key file is anywhere near this big; refusing larger ones keeps a
#: mistaken path (a disk image, a log) from being read into memory.
MAX_SIZE = 64 * 1024

#: The most KDF cost a key file may ask for: what Digital Spring itself
#: writes (:data:`DEFAULT_KDF`, libsodium's "moderate" level: 3 passes over
#: 256 MiB, about a second).  A file asking for more was not written by us;
#: it is refused before argon2 runs, so that a crafted file handed to
#: ``dspring import`` costs no more than opening one of our own.
MAX_OPSLIMIT = argon2id.OPSLIMIT_MODERATE
MAX_MEMLIMIT = argon2id.MEMLIMIT_MODERATE


class KeyFileError(DigitalSpringError):
    """
    The key file cannot be used.
    """


class NoKeyFile(KeyFileError):
    """
    There is no key file: create an identity first (``dspring init``).
    """


class KeyFileExists(KeyFileError):
    """
    A key file is already there, and it is not replaced without being asked to.
    """


class NotAKeyFile(KeyFileError):
    """
    The file is not a Digital Spring key file.
    """


class CorruptKeyFile(KeyFileError):
    """
    The key file is damaged or truncated; restore it from a backup.
    """


class UnsupportedKeyFile(KeyFileError):
    """
    The key file was written by a newer Digital Spring, or uses an encryption
    this version does not know.
    """


class PassphraseRequired(KeyFileError):
    """
    The key file is encrypted and no passphrase was given.
    """


class BadPassphrase(KeyFileError):
    """
    The passphrase does not open the key file.
    """


@frozen
class KdfParams:
    """
    The cost of deriving a key from a passphrase (argon2id).

    The default, libsodium's "moderate" level, takes about a second and
    256 MiB, and is also the most a key file may ask for
    (:data:`MAX_OPSLIMIT`, :data:`MAX_MEMLIMIT`); tests use
    :data:`FAST_KDF`.
    """

    opslimit: int = MAX_OPSLIMIT
    memlimit: int = MAX_MEMLIMIT


#: What new key files use unless told otherwise.
DEFAULT_KDF = KdfParams()

#: The cheapest parameters argon2id allows: for tests only.
FAST_KDF = KdfParams(argon2id.OPSLIMIT_MIN, argon2id.MEMLIMIT_MIN)


def _passphrase_bytes(passphrase: str | bytes) -> bytes:
    if isinstance(passphrase, str):
        passphrase = unicodedata.normalize("NFC", passphrase).encode("utf-8")
    if not passphrase:
        raise KeyFileError("the passphrase is empty")
    return passphrase


def _kdf_params(opslimit: object, memlimit: object) -> KdfParams:
    """
    KDF limits that a key file may use: whole numbers from argon2id's
    minimum up to what Digital Spring writes.

    :raises UnsupportedKeyFile: for anything else.
    """
    if not (
        isinstance(opslimit, int)
        and isinstance(memlimit, int)
        and argon2id.OPSLIMIT_MIN <= opslimit <= MAX_OPSLIMIT
        and argon2id.MEMLIMIT_MIN <= memlimit <= MAX_MEMLIMIT
    ):
        raise UnsupportedKeyFile(
            f"the key file asks for a passphrase KDF cost (opslimit={opslimit!r}, "
            f"memlimit={memlimit!r}) outside what Digital Spring writes and reads "
            f"(opslimit {argon2id.OPSLIMIT_MIN} to {MAX_OPSLIMIT}, memlimit "
            f"{argon2id.MEMLIMIT_MIN // 1024} KiB to {MAX_MEMLIMIT // 1024**2} MiB), "
            f"so it was not written by Digital Spring; it is not opened"
        )
    return KdfParams(opslimit, memlimit)


def _derive(passphrase: bytes, salt: bytes, params: KdfParams) -> bytes:
    return argon2id.kdf(
        SecretBox.KEY_SIZE, passphrase, salt, opslimit=params.opslimit, memlimit=params.memlimit
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(fields: dict[str, Any], name: str, size: int | None = None) -> bytes:
    value = fields.get(name)
    if not isinstance(value, str):
        raise CorruptKeyFile(f"the key file's {name!r} is missing")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise CorruptKeyFile(f"the key file's {name!r} is not base64") from None
    if size is not None and len(data) != size:
        raise CorruptKeyFile(f"the key file's {name!r} has {len(data)} bytes, not {size}")
    return data


def _checksum(fields: dict[str, Any]) -> str:
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.blake2b(canonical, digest_size=16, person=b"dspring-keyfile").hexdigest()


def encode_key_file(
    identity: Identity,
    passphrase: str | bytes | None,
    kdf: KdfParams = DEFAULT_KDF,
) -> bytes:
    """
    The bytes of a key file holding ``identity``.

    :param passphrase: what encrypts the file; ``None`` writes the secret
        seed in clear.
    :param kdf: at most :data:`DEFAULT_KDF`, as no more is read back.
    :raises KeyFileError: when the passphrase is empty.
    :raises UnsupportedKeyFile: when ``kdf`` asks for more than a key file
        may.
    """
    fields: dict[str, Any] = {
        "version": VERSION,
        "peer_id": str(identity.peer_id),
    }
    if passphrase is None:
        fields["encryption"] = UNENCRYPTED
        fields["seed"] = _b64(identity.seed)
    else:
        kdf = _kdf_params(kdf.opslimit, kdf.memlimit)
        salt = random_bytes(argon2id.SALTBYTES)
        box = SecretBox(_derive(_passphrase_bytes(passphrase), salt, kdf))
        fields["encryption"] = ENCRYPTED
        fields["kdf"] = {"opslimit": kdf.opslimit, "memlimit": kdf.memlimit, "salt": _b64(salt)}
        fields["box"] = _b64(bytes(box.encrypt(identity.seed)))
    fields["checksum"] = _checksum(fields)
    return MAGIC + json.dumps(fields, indent=1, sort_keys=True).encode("utf-8") + b"\n"


@frozen
class KeyFile:
    """
    A parsed key file whose structure and checksum are sound: the peer ID is
    known, the secret may still need a passphrase.
    """

    peer_id: PeerID
    encrypted: bool
    fields: dict[str, Any]

    @classmethod
    def parse(cls, data: bytes) -> KeyFile:
        """
        Check a key file's structure and checksum.

        :raises NotAKeyFile: for anything that is not a key file.
        :raises CorruptKeyFile: for a key file that is damaged or truncated.
        :raises UnsupportedKeyFile: for a newer or unknown format version.
        """
        if len(data) > MAX_SIZE:
            raise NotAKeyFile(f"a key file is at most {MAX_SIZE} bytes; this has {len(data)}")
        if not data.startswith(MAGIC):
            if data and MAGIC.startswith(data):
                raise CorruptKeyFile("the key file is truncated")
            raise NotAKeyFile("this is not a Digital Spring key file")
        try:
            fields = json.loads(data[len(MAGIC) :].decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise CorruptKeyFile("the key file is damaged or truncated") from None
        if not isinstance(fields, dict):
            raise CorruptKeyFile("the key file is damaged: no JSON object")
        version = fields.get("version")
        if version != VERSION:
            raise UnsupportedKeyFile(
                f"key file version {version!r}; this Digital Spring reads version {VERSION}"
            )
        checksum = fields.pop("checksum", None)
        if checksum != _checksum(fields):
            raise CorruptKeyFile("the key file is damaged: its checksum does not match")
        try:
            peer_id = PeerID.parse(str(fields.get("peer_id")))
        except InvalidPeerID as e:
            raise CorruptKeyFile(f"the key file's peer ID is invalid: {e}") from None
        encryption = fields.get("encryption")
        if encryption not in (ENCRYPTED, UNENCRYPTED):
            raise UnsupportedKeyFile(f"unknown key file encryption {encryption!r}")
        return cls(peer_id, encryption == ENCRYPTED, fields)

    def open(self, passphrase: str | bytes | None = None) -> Identity:
        """
        The identity in the file.

        :raises PassphraseRequired: when the file is encrypted and no
            passphrase was given.
        :raises BadPassphrase: when the passphrase is wrong.
        :raises CorruptKeyFile: when the secret does not match the peer ID.
        :raises UnsupportedKeyFile: when the file asks for a KDF cost above
            :data:`DEFAULT_KDF` (before any of that cost is spent).
        """
        if not self.encrypted:
            seed = _unb64(self.fields, "seed", 32)
        else:
            if passphrase is None:
                raise PassphraseRequired(
                    f"the key file of {self.peer_id} is encrypted: a passphrase is needed"
                )
            kdf = self.fields.get("kdf")
            if not isinstance(kdf, dict):
                raise CorruptKeyFile("the key file's 'kdf' is missing")
            params = _kdf_params(kdf.get("opslimit"), kdf.get("memlimit"))
            salt = _unb64(kdf, "salt", argon2id.SALTBYTES)
            sealed = _unb64(self.fields, "box")
            key = _derive(_passphrase_bytes(passphrase), salt, params)
            try:
                seed = SecretBox(key).decrypt(sealed)
            except CryptoError:
                raise BadPassphrase(
                    f"wrong passphrase for the key file of {self.peer_id}"
                ) from None
            if len(seed) != 32:
                raise CorruptKeyFile("the key file's secret has the wrong length")
        identity = Identity.from_seed(seed)
        if identity.peer_id != self.peer_id:
            raise CorruptKeyFile("the key file's secret does not belong to its peer ID")
        return identity


def read_key_file(path: FilePath[str]) -> KeyFile:
    """
    Read and check the key file at ``path``.

    :raises NoKeyFile: when there is none.
    :raises KeyFileError: (a subclass) when it cannot be used.
    """
    try:
        with open(path.path, "rb") as f:
            data = f.read(MAX_SIZE + 1)
    except FileNotFoundError:
        raise NoKeyFile(
            f"no key file at {path.path}: create an identity with 'dspring init'"
        ) from None
    except OSError as e:
        raise KeyFileError(f"cannot read the key file {path.path}: {e.strerror}") from None
    return KeyFile.parse(data)


def atomic_write(
    path: FilePath[str], data: bytes, mode: int = 0o600, replace: bool = False
) -> None:
    """
    Write ``data`` to ``path`` so that a crash leaves either the old file or
    the whole new one: a temporary file in the same directory, fsync, rename,
    fsync of the directory.

    :param mode: the new file's permissions, set before any byte is written.
    :param replace: whether an existing file may be replaced.
    :raises KeyFileExists: when the file exists and ``replace`` is false.
    :raises OSError: when the directory cannot be written.
    """
    if not replace and path.exists():
        raise KeyFileExists(f"{path.path} exists already")
    directory = path.parent()
    tmp = directory.child(f".{path.basename()}.{_b64(random_bytes(6)).replace('/', '_')}.tmp")
    fd = os.open(tmp.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp.path, path.path)
        else:
            # link() fails if the target appeared meanwhile; rename() would not.
            os.link(tmp.path, path.path)
            os.unlink(tmp.path)
    except BaseException:
        if os.path.exists(tmp.path):
            os.unlink(tmp.path)
        raise
    dir_fd = os.open(directory.path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_key_file(
    path: FilePath[str],
    identity: Identity,
    passphrase: str | bytes | None,
    kdf: KdfParams = DEFAULT_KDF,
    replace: bool = False,
) -> None:
    """
    Write ``identity`` to a key file at ``path``, atomically and with mode
    0600.

    :param passphrase: what encrypts the file; ``None`` writes it in clear.
    :raises KeyFileExists: when there is a file and ``replace`` is false.
    """
    try:
        atomic_write(path, encode_key_file(identity, passphrase, kdf), replace=replace)
    except FileExistsError:
        raise KeyFileExists(f"{path.path} exists already") from None
