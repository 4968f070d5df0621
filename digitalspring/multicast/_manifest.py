# -*- test-case-name: tests.test_manifest -*-
"""
Manifests: what lets anyone on a message's path check each fragment of it
without reading it, and lets members check that it is the owner's.

A manifest names its group, epoch and index, the padded size of the
content, the fragment size, the hash of the previous manifest of the epoch
(zeros for index 0) and the nonce, then the BLAKE2b-256 hash of every
fragment of the ciphertext.  Canonical encoding::

    header:
        varint  version (1)
        32 B    group ID
        varint  epoch
        varint  index (below 1,000)
        varint  padded size of the content
        varint  fragment size (1 to 65,000)
        32 B    hash of the previous manifest
        24 B    XChaCha20-Poly1305 nonce
    body:
        header, then the 32-byte hash of each fragment (their number follows
        from the sizes: ceil((padded size + 16) / fragment size))
    signed manifest:
        body, then the Ed25519 signature by the epoch signing key over
        MANIFEST_DOMAIN || body

The header is the associated data of the encryption, so a ciphertext
decrypts only as the message it was made as.  The hash of a manifest is
``BLAKE2b(person="ds-manifest", body)``: the signature is not part of it,
since anyone holding a revealed signing seed could sign a body again.
"""

from __future__ import annotations

from attrs import field, frozen

from .._codec import Reader, varint
from ..errors import DigitalSpringError
from ._content import MAX_PADDED_SIZE, MIN_PADDED_SIZE
from ._crypto import (
    HASH_SIZE,
    NONCE_SIZE,
    SIGNATURE_SIZE,
    TAG_SIZE,
    blake2b,
    sign,
    signature_valid,
)
from ._epoch import EPOCH_MAX_MESSAGES, GROUP_ID_SIZE

#: What a manifest signature signs before the body: domain separation.
MANIFEST_DOMAIN = b"digitalspring group manifest v1\0"
MANIFEST_VERSION = 1
#: The largest fragment, so that one fits an AMP value (65,535 bytes) with
#: room to spare.
FRAGMENT_SIZE = 65_000
#: The most fragments of one message: the largest padded content in
#: fragments of the largest size.
MAX_FRAGMENTS = -(-(MAX_PADDED_SIZE + TAG_SIZE) // FRAGMENT_SIZE)
#: The longest header: the varints at their longest.
MAX_HEADER_SIZE = 1 + GROUP_ID_SIZE + 10 + 2 + 4 + 3 + HASH_SIZE + NONCE_SIZE
#: The largest signed manifest, in bytes (about 33 kB).
MAX_MANIFEST_SIZE = MAX_HEADER_SIZE + MAX_FRAGMENTS * HASH_SIZE + SIGNATURE_SIZE
#: The hash a first manifest names as its previous one.
NO_PREVIOUS = bytes(HASH_SIZE)

_MANIFEST = b"ds-manifest"
_FRAGMENT = b"ds-fragment"


class ManifestRejected(DigitalSpringError):
    """
    A message's manifest was refused.
    """


class MalformedManifest(ManifestRejected):
    """
    The message's manifest cannot be decoded, or its sizes are out of bounds.
    """


class NonCanonicalManifest(ManifestRejected):
    """
    The message's manifest is not in its one canonical encoding.
    """


class BadManifestSignature(ManifestRejected):
    """
    The message's manifest is not signed by the owner's key for its epoch.
    """


class FragmentRejected(DigitalSpringError):
    """
    A fragment does not belong to its message: a wrong number, a wrong size,
    or bytes that do not match their hash in the manifest.
    """


def _hashes(items: tuple[bytes, ...]) -> tuple[bytes, ...]:
    return tuple(items)


def fragment_count(padded_size: int, fragment_size: int) -> int:
    """
    How many fragments the ciphertext of a ``padded_size`` content makes.
    """
    return -(-(padded_size + TAG_SIZE) // fragment_size)


@frozen
class Manifest:
    """
    A message's manifest.

    :ivar index: the message's number in its epoch.
    :ivar padded_size: the size of the padded content (the ciphertext is
        16 bytes longer).
    :ivar previous: the hash of the manifest of message ``index - 1``.
    :ivar nonce: the nonce of the encryption.
    :ivar fragment_hashes: the BLAKE2b-256 hash of each fragment.
    """

    group_id: bytes
    epoch: int
    index: int
    padded_size: int
    fragment_size: int
    previous: bytes
    nonce: bytes = field(repr=False)
    fragment_hashes: tuple[bytes, ...] = field(converter=_hashes, repr=False)

    @property
    def header(self) -> bytes:
        """
        The header's encoding: the associated data of the encryption.
        """
        return encode_header(self)

    @property
    def hash(self) -> bytes:
        """
        The hash that the next manifest of the epoch names.
        """
        return blake2b(_MANIFEST, encode_manifest(self))

    @property
    def ciphertext_size(self) -> int:
        """
        The size of the whole ciphertext.
        """
        return self.padded_size + TAG_SIZE


def fragment_hash(data: bytes) -> bytes:
    """
    The hash of a fragment, as its manifest lists it.
    """
    return blake2b(_FRAGMENT, data)


def split_fragments(ciphertext: bytes, fragment_size: int = FRAGMENT_SIZE) -> tuple[bytes, ...]:
    """
    ``ciphertext`` in fragments of ``fragment_size`` bytes (the last one
    shorter).
    """
    return tuple(
        ciphertext[start : start + fragment_size]
        for start in range(0, len(ciphertext), fragment_size)
    )


def _check_bounds(manifest: Manifest) -> None:
    """
    :raises ValueError: when a value is out of range.
    """
    if len(manifest.group_id) != GROUP_ID_SIZE:
        raise ValueError(f"a group ID has {GROUP_ID_SIZE} bytes")
    if not 0 <= manifest.index < EPOCH_MAX_MESSAGES:
        raise ValueError(f"an index is below {EPOCH_MAX_MESSAGES}")
    if manifest.padded_size < MIN_PADDED_SIZE or manifest.padded_size > MAX_PADDED_SIZE:
        raise ValueError(f"a padded size is {MIN_PADDED_SIZE} to {MAX_PADDED_SIZE} bytes")
    if not 0 < manifest.fragment_size <= FRAGMENT_SIZE:
        raise ValueError(f"a fragment has 1 to {FRAGMENT_SIZE} bytes")
    if len(manifest.previous) != HASH_SIZE or len(manifest.nonce) != NONCE_SIZE:
        raise ValueError("a manifest hash or nonce of the wrong size")
    count = fragment_count(manifest.padded_size, manifest.fragment_size)
    if count > MAX_FRAGMENTS:
        raise ValueError(f"a message has at most {MAX_FRAGMENTS} fragments, not {count}")
    if len(manifest.fragment_hashes) != count:
        raise ValueError(f"the manifest lists {len(manifest.fragment_hashes)} hashes, not {count}")
    if any(len(digest) != HASH_SIZE for digest in manifest.fragment_hashes):
        raise ValueError(f"a fragment hash has {HASH_SIZE} bytes")


def encode_header(manifest: Manifest) -> bytes:
    """
    The canonical encoding of a manifest's header.
    """
    return b"".join(
        [
            varint(MANIFEST_VERSION),
            manifest.group_id,
            varint(manifest.epoch),
            varint(manifest.index),
            varint(manifest.padded_size),
            varint(manifest.fragment_size),
            manifest.previous,
            manifest.nonce,
        ]
    )


def encode_manifest(manifest: Manifest) -> bytes:
    """
    The canonical encoding of a manifest's body (what is signed, after the
    domain string).

    :raises ValueError: when a value is out of range.
    """
    _check_bounds(manifest)
    return encode_header(manifest) + b"".join(manifest.fragment_hashes)


def sign_manifest(manifest: Manifest, signing_seed: bytes) -> bytes:
    """
    The signed manifest: its body and the epoch signing key's signature.

    :raises ValueError: when a value is out of range.
    """
    body = encode_manifest(manifest)
    return body + sign(signing_seed, MANIFEST_DOMAIN + body)


def decode_manifest(signed: bytes) -> Manifest:
    """
    The manifest in a signed manifest, checked for size and canonical
    encoding but not for its signature (:func:`verify_manifest` does): what
    a node reads to know which group and epoch it claims.

    :raises MalformedManifest: when it cannot be decoded or is out of bounds.
    :raises NonCanonicalManifest: when encoding it again gives other bytes.
    """
    if len(signed) > MAX_MANIFEST_SIZE:
        raise MalformedManifest(
            f"the manifest has {len(signed)} bytes; at most {MAX_MANIFEST_SIZE}"
        )
    reader = Reader(signed[:-SIGNATURE_SIZE], MalformedManifest, "manifest")
    if len(signed) < SIGNATURE_SIZE:
        raise reader.fail("is truncated")
    version = reader.varint()
    if version != MANIFEST_VERSION:
        raise reader.fail(f"is of version {version}, not {MANIFEST_VERSION}")
    group_id = reader.take(GROUP_ID_SIZE)
    epoch = reader.varint()
    index = reader.varint(EPOCH_MAX_MESSAGES - 1)
    padded_size = reader.varint(MAX_PADDED_SIZE)
    if padded_size < MIN_PADDED_SIZE:
        raise reader.fail(f"names a padded size of {padded_size}, below {MIN_PADDED_SIZE}")
    fragment_size = reader.varint(FRAGMENT_SIZE)
    if fragment_size == 0:
        raise reader.fail("names fragments of 0 bytes")
    count = fragment_count(padded_size, fragment_size)
    if count > MAX_FRAGMENTS:
        raise reader.fail(f"names {count} fragments; at most {MAX_FRAGMENTS}")
    previous = reader.take(HASH_SIZE)
    nonce = reader.take(NONCE_SIZE)
    hashes = tuple(reader.take(HASH_SIZE) for _ in range(count))
    reader.end()
    manifest = Manifest(
        group_id, epoch, index, padded_size, fragment_size, previous, nonce, hashes
    )
    if encode_manifest(manifest) != reader.data:
        raise NonCanonicalManifest(
            f"the manifest of message {index} of epoch {epoch} is not canonically encoded"
        )
    return manifest


def verify_manifest(signed: bytes, signing_public_key: bytes) -> Manifest:
    """
    The manifest in a signed manifest, if the epoch signing key signed it.

    :param signing_public_key: the public key of the epoch the caller
        expects (from its key delivery, for the group and epoch that
        :func:`decode_manifest` read).
    :raises MalformedManifest: when it cannot be decoded or is out of bounds.
    :raises NonCanonicalManifest: when encoding it again gives other bytes.
    :raises BadManifestSignature: when the signature is not by
        ``signing_public_key`` over the domain string and the body.
    """
    manifest = decode_manifest(signed)
    body, signature = signed[:-SIGNATURE_SIZE], signed[-SIGNATURE_SIZE:]
    if not signature_valid(signing_public_key, MANIFEST_DOMAIN + body, signature):
        raise BadManifestSignature(
            f"the manifest of message {manifest.index} of epoch {manifest.epoch} "
            "is not signed by the owner's key for that epoch"
        )
    return manifest


def check_fragment(manifest: Manifest, number: int, data: bytes) -> None:
    """
    Refuse ``data`` unless it is fragment ``number`` of the manifest's
    message: its size first (free), then its hash.  What a forwarder or a
    mailbox runs before it keeps or passes on a fragment it cannot read.

    :raises FragmentRejected: when it is not.
    """
    count = len(manifest.fragment_hashes)
    if not 0 <= number < count:
        raise FragmentRejected(f"the message has fragments 0 to {count - 1}, not {number}")
    if number < count - 1:
        size = manifest.fragment_size
    else:
        size = manifest.ciphertext_size - manifest.fragment_size * (count - 1)
    if len(data) != size:
        raise FragmentRejected(f"fragment {number} has {len(data)} bytes, not {size}")
    if fragment_hash(data) != manifest.fragment_hashes[number]:
        raise FragmentRejected(f"fragment {number} does not match its hash in the manifest")
