# -*- test-case-name: tests.test_group_crypto -*-
"""
The symmetric ratchet of an epoch: message ``i``'s key and the next chain
key both come from chain key ``CK_i``::

    message key i = BLAKE2b(key=CK_i, person="ds-message-key")
    CK_(i+1)      = BLAKE2b(key=CK_i, person="ds-chain-key")

Each step returns a new value and leaves the old one alone: the caller
stores the new chain state in the same transaction as what it sent or
received, then drops the old value, so nothing is deleted behind its back
and nothing is deleted before it is committed.  A chain state opens no
earlier message (BLAKE2b is one-way); a message key opens one message.

A receiver keeps the keys of the messages it skipped (out of order), at most
:data:`MAX_SKIP` of them, and refuses an index beyond that bound with an
integer comparison, before it derives anything.
"""

from __future__ import annotations

from attrs import field, frozen

from ..errors import DigitalSpringError
from ._crypto import blake2b

#: The most message keys a receiver derives ahead of the message it has,
#: and keeps for messages that have not come yet.  An epoch holds at most
#: 1,000 messages (:data:`~digitalspring.multicast.EPOCH_MAX_MESSAGES`), so
#: this bound never drops the key of a message the owner sent.
MAX_SKIP = 1000

_MESSAGE_KEY = b"ds-message-key"
_CHAIN_KEY = b"ds-chain-key"


class ChainRefused(DigitalSpringError):
    """
    A message was refused by the receiving chain of its epoch.
    """


class DuplicateMessage(ChainRefused):
    """
    This message of the group was already received (or was sent before this
    member joined).
    """


class FarFutureIndex(ChainRefused):
    """
    The message claims an index too far ahead of the messages received so
    far; it is refused without any work.
    """


class ChainClosed(ChainRefused):
    """
    The message claims an index beyond the last one of its closed epoch.
    """


def ratchet(chain_key: bytes) -> tuple[bytes, bytes]:
    """
    One step of the chain: the message key of ``chain_key`` and the next
    chain key.
    """
    return blake2b(_MESSAGE_KEY, b"", chain_key), blake2b(_CHAIN_KEY, b"", chain_key)


def _keys(items: tuple[tuple[int, bytes], ...]) -> tuple[tuple[int, bytes], ...]:
    return tuple(sorted(items))


@frozen
class SendingChain:
    """
    The owner's position in the chain of an epoch.

    :ivar next_index: the index of the next message.
    :ivar chain_key: ``CK_(next_index)``.
    """

    next_index: int
    chain_key: bytes = field(repr=False)


def next_message_key(chain: SendingChain) -> tuple[int, bytes, SendingChain]:
    """
    The index and key of the next message, and the chain after it.
    """
    message_key, chain_key = ratchet(chain.chain_key)
    return chain.next_index, message_key, SendingChain(chain.next_index + 1, chain_key)


@frozen
class ReceivingChain:
    """
    A receiver's position in the chain of an epoch.

    :ivar next_index: the lowest index whose key is not derived yet.
    :ivar chain_key: ``CK_(next_index)``, or ``None`` once the epoch is
        closed and every key it can need is derived.
    :ivar skipped: ``(index, message key)`` of the messages below
        ``next_index`` not received yet, by index.
    :ivar end: the number of messages of the epoch once it is closed.
    """

    next_index: int
    chain_key: bytes | None = field(repr=False)
    skipped: tuple[tuple[int, bytes], ...] = field(default=(), converter=_keys, repr=False)
    end: int | None = None


def receive_message_key(
    chain: ReceivingChain, index: int, max_skip: int = MAX_SKIP
) -> tuple[bytes, ReceivingChain]:
    """
    The key of message ``index``, and the chain without it.

    :raises DuplicateMessage: when that key was already used.
    :raises FarFutureIndex: when it would take keeping more than
        ``max_skip`` keys of skipped messages.
    :raises ChainClosed: when the epoch is closed before ``index``.
    """
    if chain.end is not None and index >= chain.end:
        raise ChainClosed(f"message {index} is beyond the {chain.end} messages of its epoch")
    if index < chain.next_index:
        for position, (waiting, key) in enumerate(chain.skipped):
            if waiting == index:
                rest = chain.skipped[:position] + chain.skipped[position + 1 :]
                return key, ReceivingChain(chain.next_index, chain.chain_key, rest, chain.end)
        raise DuplicateMessage(
            f"message {index} was already received, or precedes the first one this member reads"
        )
    if index - chain.next_index + len(chain.skipped) > max_skip:
        raise FarFutureIndex(
            f"message {index} is more than {max_skip} ahead of the messages received"
        )
    chain_key = chain.chain_key
    assert chain_key is not None, "an open chain or one not yet exhausted has a key"
    skipped = list(chain.skipped)
    for missing in range(chain.next_index, index):
        message_key, chain_key = ratchet(chain_key)
        skipped.append((missing, message_key))
    message_key, chain_key = ratchet(chain_key)
    return message_key, _settled(ReceivingChain(index + 1, chain_key, tuple(skipped), chain.end))


def close_receiving_chain(chain: ReceivingChain, count: int) -> ReceivingChain:
    """
    The chain once its epoch is closed after ``count`` messages: keys of
    later messages are dropped, and the chain key too once no message is
    left to derive.
    """
    skipped = tuple((index, key) for index, key in chain.skipped if index < count)
    return _settled(ReceivingChain(chain.next_index, chain.chain_key, skipped, count))


def _settled(chain: ReceivingChain) -> ReceivingChain:
    if chain.end is not None and chain.next_index >= chain.end and chain.chain_key is not None:
        return ReceivingChain(chain.next_index, None, chain.skipped, chain.end)
    return chain
