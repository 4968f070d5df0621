# -*- test-case-name: tests.test_group_crypto -*-
"""
Sealing a message (the owner) and opening it (a member): content, chain,
encryption and manifest put together, as pure functions.

To seal, the owner pads the content, takes the next key of its sending
chain, encrypts with the manifest's header as associated data, splits the
ciphertext into fragments, hashes them and signs the manifest.  To open, a
member checks every fragment against the verified manifest, takes the
message's key from its receiving chain and decrypts.  Both return the new
state instead of changing the old one, so that the caller commits the new
chain state together with the message, or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence

from attrs import evolve, frozen

from ._chain import ReceivingChain, next_message_key, receive_message_key
from ._content import Content, pad_content, unpad_content
from ._crypto import decrypt, encrypt, random_nonce
from ._epoch import OwnerEpoch
from ._manifest import (
    FRAGMENT_SIZE,
    FragmentRejected,
    Manifest,
    check_fragment,
    fragment_hash,
    sign_manifest,
    split_fragments,
)


@frozen
class SealedMessage:
    """
    A message ready to send.

    :ivar signed_manifest: the signed manifest's bytes.
    :ivar fragments: the ciphertext's fragments, in order.
    """

    manifest: Manifest
    signed_manifest: bytes
    fragments: tuple[bytes, ...]


def seal(
    owner: OwnerEpoch, content: Content, fragment_size: int = FRAGMENT_SIZE
) -> tuple[SealedMessage, OwnerEpoch]:
    """
    ``content`` sealed as the next message of the owner's epoch, and the
    owner's state after it (its chain one step on, its last hash that of
    this manifest).  The caller checks first that the epoch need not end
    (:func:`~digitalspring.multicast.end_reason`).

    :raises ContentTooLarge: when the content is too large.
    :raises ValueError: when ``fragment_size`` is out of range, or the epoch
        has no index left.
    """
    padded = pad_content(content)
    index, message_key, chain = next_message_key(owner.chain)
    keys = owner.keys
    unsigned = Manifest(
        keys.group_id,
        keys.epoch,
        index,
        len(padded),
        fragment_size,
        owner.last_hash,
        random_nonce(),
        (),
    )
    ciphertext = encrypt(message_key, unsigned.nonce, padded, unsigned.header)
    fragments = split_fragments(ciphertext, fragment_size)
    manifest = Manifest(
        unsigned.group_id,
        unsigned.epoch,
        index,
        unsigned.padded_size,
        fragment_size,
        unsigned.previous,
        unsigned.nonce,
        tuple(fragment_hash(fragment) for fragment in fragments),
    )
    signed = sign_manifest(manifest, keys.signing_seed)
    after = evolve(owner, chain=chain, last_hash=manifest.hash)
    return SealedMessage(manifest, signed, fragments), after


def open_message(
    manifest: Manifest, fragments: Sequence[bytes], chain: ReceivingChain
) -> tuple[Content, ReceivingChain]:
    """
    The content of a message whose manifest was verified and accepted, and
    the receiving chain without its key.

    :raises FragmentRejected: when a fragment is missing or does not match
        the manifest.
    :raises DuplicateMessage: when the chain already used this message's key.
    :raises FarFutureIndex: when the index is too far ahead of the chain.
    :raises ChainClosed: when the index is beyond its closed epoch.
    :raises UndecryptableMessage: when the ciphertext does not decrypt.
    :raises MalformedContent: when the content is not canonical.
    """
    if len(fragments) != len(manifest.fragment_hashes):
        raise FragmentRejected(
            f"the message has {len(manifest.fragment_hashes)} fragments, not {len(fragments)}"
        )
    for number, fragment in enumerate(fragments):
        check_fragment(manifest, number, fragment)
    message_key, after = receive_message_key(chain, manifest.index)
    padded = decrypt(message_key, manifest.nonce, b"".join(fragments), manifest.header)
    return unpad_content(padded), after


def sent_message_key(owner: OwnerEpoch) -> bytes:
    """
    The key :func:`seal` encrypts the owner's next message with: what the
    owner keeps, with the fragments, as its own copy of a message it sent.
    """
    return next_message_key(owner.chain)[1]


def open_sent(manifest: Manifest, fragments: Sequence[bytes], message_key: bytes) -> Content:
    """
    The content of a message the owner sent, from its fragments and key.

    :raises FragmentRejected: when a fragment is missing or does not match.
    :raises UndecryptableMessage: when the ciphertext does not decrypt.
    :raises MalformedContent: when the content is not canonical.
    """
    if len(fragments) != len(manifest.fragment_hashes):
        raise FragmentRejected(
            f"the message has {len(manifest.fragment_hashes)} fragments, not {len(fragments)}"
        )
    for number, fragment in enumerate(fragments):
        check_fragment(manifest, number, fragment)
    padded = decrypt(message_key, manifest.nonce, b"".join(fragments), manifest.header)
    return unpad_content(padded)
