# -*- test-case-name: tests.test_storage_sqlite -*-
"""
Secrets at rest: the storage key and the sealing of one value in one row.

Pure functions, no I/O.  A sealed value is ``nonce || ciphertext`` of
XChaCha20-Poly1305 under the storage key, with a random 24-byte nonce and,
as associated data, the row's identity: which table and column, and the key
of the row (group, epoch, index...).  A value copied into another row, or
changed, fails to open.
"""

from __future__ import annotations

import hashlib

from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
    crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
)
from nacl.exceptions import CryptoError
from nacl.utils import random as random_bytes

from ..identity import Identity
from ._errors import TamperedRow

#: What every associated data starts with: the format of sealed values.
SEALING_DOMAIN = b"digitalspring store v1\0"
_NONCE = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES


def storage_key(identity: Identity) -> bytes:
    """
    The key that seals the secrets of ``identity``'s store: derived from
    its secret seed, so the passphrase that protects the key file protects
    them too.
    """
    return hashlib.blake2b(
        b"", key=identity.seed, person=b"ds-storage-key", digest_size=32
    ).digest()


def row_identity(table: str, column: str, *parts: bytes | int | str) -> bytes:
    """
    The associated data of one sealed value: ``table``, ``column`` and the
    row's key ``parts``, each length-prefixed so no two rows share it.
    """
    out = [SEALING_DOMAIN]
    for part in (table, column, *parts):
        if isinstance(part, int):
            data = part.to_bytes(8, "big", signed=True)
        elif isinstance(part, str):
            data = part.encode("utf-8")
        else:
            data = part
        out.append(len(data).to_bytes(4, "big") + data)
    return b"".join(out)


def seal(key: bytes, row: bytes, plaintext: bytes) -> bytes:
    """
    Encrypt ``plaintext`` for the row whose identity is ``row``.
    """
    nonce = random_bytes(_NONCE)
    return nonce + crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, row, nonce, key)


def unseal(key: bytes, row: bytes, sealed: bytes) -> bytes:
    """
    Decrypt a value sealed for the row whose identity is ``row``.

    :raises TamperedRow: when it does not authenticate.
    """
    try:
        return crypto_aead_xchacha20poly1305_ietf_decrypt(
            sealed[_NONCE:], row, sealed[:_NONCE], key
        )
    except (CryptoError, ValueError, TypeError):
        raise TamperedRow(
            "an encrypted value in the node's database does not authenticate:"
            " it was changed or moved outside Digital Spring"
        ) from None
