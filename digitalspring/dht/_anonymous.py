# -*- test-case-name: tests.test_dht_anonymous -*-
# mypy: disallow-untyped-calls=False
"""
Reading small values without telling who reads (issue 12's DHT fallback
for notifications; ``docs/offline.rst``).

:meth:`DHT.get <digitalspring.dht.DHT.get>` asks over the node's own
channels: every node on the lookup's path learns the reader's peer ID with
the key.  A member that reads the key its notifications are left under
must not be linkable to it, so :func:`get_anonymously` runs the same
iterative lookup over connections of its own, dialled with an identity
made for this one lookup and thrown away after it (Noise XX: each node
checks nothing of it, and learns only a key that signs nothing), with no
address claimed (the nodes do not take it into their tables), and closes
them at its end.  Each node of the path still learns the key, the
throwaway identity, and where the connection came from (over Tor, nothing
of the address).  One identity serves the whole lookup: its requests are
linkable to one another, not to the reader.

Unlike ``get``, it does not stop at the first node holding values: a node
that answers with values of its own (their proof of work paid) would
otherwise hide the others' values.  It asks the ``k`` closest nodes it
finds, and returns every value any of them holds (its own node's too, when
it is among them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.protocols import amp

from ..errors import DigitalSpringError
from ..identity import Identity
from ..transport import split_address
from ._ids import id_from_bytes
from ._lookup import Answer, Lookup
from ._routing import Contact
from ._rpc import MAILBOX, FindValue

if TYPE_CHECKING:
    from ._dht import DHT


class NoAnswer(DigitalSpringError):
    """
    No node of the DHT answered the lookup: whether anything is held under
    the key is unknown.
    """


async def get_anonymously(dht: DHT, key: bytes) -> list[bytes]:
    """
    The values held under ``key`` by the nodes closest to it, asked with a
    throwaway identity (see the module).

    :raises NoAnswer: when no node answered.
    """
    # Imported here: the channel layer sits above the DHT's own modules.
    from ..channel import SecureChannelFactory, SecureChannelProtocol

    target = id_from_bytes(key)
    settings = dht.settings
    identity = Identity.generate()
    channels: list[Any] = []
    found: dict[bytes, None] = dict.fromkeys(dht.held_values(key))
    answered = 0

    async def connect(contact: Contact) -> amp.AMP:
        errors = []
        for address in contact.addresses:
            name, description = split_address(address)
            transport = dht.pool.transports.get(name)
            if transport is None:
                continue
            factory = SecureChannelFactory(
                identity,
                Factory.forProtocol(amp.AMP),
                dht.clock,
                initiator=True,
                expected_peer=contact.peer_id,
                pattern="XX",
            )
            try:
                channel = await transport.connect(description, factory)
                assert isinstance(channel, SecureChannelProtocol)
                channels.append(channel)
                protocol = await channel.when_secured()
            except Exception as e:
                errors.append(f"{address}: {e}")
                continue
            assert isinstance(protocol, amp.AMP)
            return protocol
        raise NoAnswer(f"cannot reach {contact.peer_id}: " + "; ".join(errors))

    async def ask_one(contact: Contact) -> Answer:
        nonlocal answered
        protocol = await connect(contact)
        answer = await protocol.callRemote(FindValue, key=key, kind=MAILBOX, origin=())
        answered += 1
        checked = dht.values_answer(answer, key)
        for value in checked.found or ():
            found[value] = None
        # No value ends the lookup: it goes on to the k closest.
        return Answer(checked.contacts)

    def ask(contact: Contact) -> Deferred[Answer]:
        d = Deferred.fromCoroutine(ask_one(contact))
        d.addTimeout(settings.rpc_timeout, dht.clock)
        return d

    seeds = dht.table.closest(target, 2 * settings.k)
    try:
        await Lookup(
            target,
            seeds,
            ask,
            dht.clock,
            dht.own_id,
            k=settings.k,
            alpha=settings.alpha,
            deadline=settings.lookup_deadline,
        ).start()
    finally:
        for channel in channels:
            channel.loseConnection()
    if not answered:
        raise NoAnswer("no DHT node answered" if seeds else "this node knows no DHT node")
    return list(found)
