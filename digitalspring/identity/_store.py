# -*- test-case-name: tests.test_keyfile -*-
"""
Where a node keeps its identity: the key file in its data directory, and
backups of it.
"""

from __future__ import annotations

import os

from twisted.python.filepath import FilePath

from ._keyfile import (
    DEFAULT_KDF,
    KdfParams,
    KeyFileError,
    KeyFileExists,
    NoKeyFile,
    PassphraseRequired,
    read_key_file,
    write_key_file,
)
from ._peerid import Identity

KEY_FILE_NAME = "identity.key"


def ensure_data_dir(data_dir: FilePath[str]) -> None:
    """
    Create the data directory, readable by its owner only, if it is missing.

    :raises KeyFileError: when it cannot be created.
    """
    try:
        os.makedirs(data_dir.path, mode=0o700, exist_ok=True)
    except OSError as e:
        raise KeyFileError(
            f"cannot create the data directory {data_dir.path}: {e.strerror}"
        ) from None


def key_file_path(data_dir: FilePath[str]) -> FilePath[str]:
    """
    The key file of the node whose data directory is ``data_dir``.
    """
    return data_dir.child(KEY_FILE_NAME)


def create_identity(
    data_dir: FilePath[str],
    passphrase: str | bytes | None,
    kdf: KdfParams = DEFAULT_KDF,
) -> Identity:
    """
    Make a new identity and write its key file into ``data_dir``.

    :param passphrase: what encrypts the key file; ``None`` for a key file in
        clear.
    :raises KeyFileExists: when the data directory has an identity already.
    """
    ensure_data_dir(data_dir)
    identity = Identity.generate()
    write_key_file(key_file_path(data_dir), identity, passphrase, kdf)
    return identity


def load_identity(data_dir: FilePath[str], passphrase: str | bytes | None) -> Identity:
    """
    Open the identity in ``data_dir``.

    :raises NoKeyFile: when there is none.
    :raises PassphraseRequired: when it is encrypted and ``passphrase`` is
        ``None``.
    :raises BadPassphrase: when the passphrase is wrong.
    :raises KeyFileError: (another subclass) when the key file is damaged.
    """
    return read_key_file(key_file_path(data_dir)).open(passphrase)


def load_or_create_identity(
    data_dir: FilePath[str],
    passphrase: str | bytes | None,
    unencrypted: bool,
    kdf: KdfParams = DEFAULT_KDF,
) -> tuple[Identity, bool]:
    """
    Open the identity in ``data_dir``, creating it when there is none.

    :param passphrase: the key file's passphrase, or ``None``.
    :param unencrypted: whether a new identity may be written without a
        passphrase.  Without it and without a passphrase, nothing is created.
    :returns: the identity and whether it was created now.
    :raises PassphraseRequired: when a passphrase is needed and none was
        given.
    """
    try:
        return load_identity(data_dir, passphrase), False
    except NoKeyFile:
        if passphrase is None and not unencrypted:
            raise PassphraseRequired(
                f"there is no identity in {data_dir.path} yet, and creating one needs a "
                "passphrase (--passphrase-file FILE) or explicitly none (--no-passphrase)"
            ) from None
    try:
        return create_identity(data_dir, passphrase, kdf), True
    except KeyFileExists:
        # Another process created it between our read and our write.
        return load_identity(data_dir, passphrase), False


def export_identity(
    data_dir: FilePath[str],
    passphrase: str | bytes | None,
    backup: FilePath[str],
    backup_passphrase: str | bytes,
    kdf: KdfParams = DEFAULT_KDF,
) -> Identity:
    """
    Write a backup of the identity in ``data_dir``, always encrypted.

    :param passphrase: the passphrase of the key file in ``data_dir``.
    :param backup_passphrase: what encrypts the backup.
    :raises KeyFileExists: when ``backup`` exists.
    """
    identity = load_identity(data_dir, passphrase)
    write_key_file(backup, identity, backup_passphrase, kdf)
    return identity


def import_identity(
    data_dir: FilePath[str],
    backup: FilePath[str],
    backup_passphrase: str | bytes | None,
    passphrase: str | bytes | None,
    kdf: KdfParams = DEFAULT_KDF,
    replace: bool = False,
) -> Identity:
    """
    Restore the identity in the backup file ``backup`` into ``data_dir``.

    :param backup_passphrase: the backup's passphrase.
    :param passphrase: what encrypts the new key file; ``None`` for one in
        clear.
    :param replace: whether another identity in ``data_dir`` may be
        replaced.  Restoring the identity that is there already is harmless
        and always allowed.
    :raises KeyFileExists: when ``data_dir`` holds another identity and
        ``replace`` is false.
    """
    identity = read_key_file(backup).open(backup_passphrase)
    ensure_data_dir(data_dir)
    target = key_file_path(data_dir)
    try:
        present = read_key_file(target).peer_id
    except NoKeyFile:
        present = None
    except KeyFileError:
        if not replace:
            raise
        present = None
    if present is not None and present != identity.peer_id and not replace:
        raise KeyFileExists(
            f"{data_dir.path} holds another identity ({present}); "
            "import with --force to replace it"
        )
    write_key_file(target, identity, passphrase, kdf, replace=present is not None or replace)
    return identity
