# -*- test-case-name: tests.test_strategy_plugins -*-
"""
What a multicast strategy is: how a group's messages get from its owner to
its members.

A strategy is a plugin (:class:`IMulticastStrategyPlugin`), named like a
transport; a group records the name of its strategy when it is created, and
every node in the group runs that strategy for it.  The node's multicast
service makes one :class:`IMulticastStrategy` per group it takes part in,
giving it that group's view (:class:`IStrategyContext`); the strategy moves
manifests and fragments with AMP commands of its own, which its plugin
answers (:meth:`IMulticastStrategyPlugin.locator`).

What stays with the service, whatever the strategy: sealing and opening
messages, the member list (the owner's alone), membership proofs on each
connection, storage, commitment, acknowledgements to the owner (so a delivery
report counts a member only once that member has committed the message, and
a forwarder learns nothing of who acknowledged what), and subscribers.  What
a strategy decides is who sends which fragment to whom, and when.

Built in, ``unicast`` (the owner sends every member every fragment) and
``spring``, the default (the whitepaper's transmission phase: the owner
activates members, activations spread along the neighbour graph and seed a
distribution graph in which each online member keeps ``D`` connections,
announces the fragments it gets and sends them to those who ask).

A strategy may also carry the members' acknowledgements to the owner
itself (:class:`IAcknowledgementCarrier`), for example aggregated along the
paths its transmission took, so that the owner does not need a connection
per member; they stay authenticated end to end
(:class:`IAcknowledgementRelay`).

Catch-up (a member back from an absence pulling what the stores of the
group's mailboxes, neighbours and owner hold) is the service's, the same
for every strategy; a strategy may get each fragment of it from the holder
the service chose itself (:class:`ICatchUpFetcher`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from attrs import field, frozen
from twisted.plugin import IPlugin
from zope.interface import Attribute, Interface

from ..identity import PeerID

if TYPE_CHECKING:
    from collections.abc import Callable

    from twisted.internet.defer import Deferred
    from twisted.protocols import amp
    from twisted.protocols.amp import CommandLocator

    from ..channel import PeerConnection
    from ._manifest import Manifest
    from ._message import SealedMessage


@frozen
class TransmissionReport:
    """
    How this node's part of one transmission ended, as its strategy saw it.

    This is not the delivery report: a member counts as having a message
    only once it has committed it and said so to the owner, which the
    service tracks for every strategy alike.

    :ivar reached: the peers this node handed every fragment to, or that
        said they had them all already.
    :ivar unreached: the peers this node tried to reach and could not
        (offline, unreachable, or refusing); catch-up and mailboxes are for
        them.
    """

    reached: frozenset[PeerID] = field(factory=frozenset)
    unreached: frozenset[PeerID] = field(factory=frozenset)


class IStrategyContext(Interface):
    """
    A group as one node's strategy sees it, provided by the node's
    multicast service.

    Everything a strategy may know or do for its group goes through here:
    the strategy has no member list (unless it runs at the owner), no keys
    and no direct way to store a fragment.
    """

    group_id = Attribute("The group's 32-byte ID: ``bytes``.")
    local = Attribute("This node's :class:`~digitalspring.identity.PeerID`.")
    owner = Attribute("The group owner's :class:`~digitalspring.identity.PeerID`.")
    role = Attribute(
        "How this node takes part: ``'owner'``, ``'member'`` or ``'mailbox'`` (a ``str``)."
    )
    degree = Attribute("``N``, how many neighbours each member has: an ``int``.")
    clock = Attribute(
        "The :class:`~twisted.internet.interfaces.IReactorTime` every timer of the "
        "strategy runs on (a ``task.Clock`` in tests and simulations)."
    )
    store = Attribute(
        "The node's :class:`~digitalspring.storage.IStore`, to read what it holds "
        "(manifests, fragments, history).  Strategies never write to it: "
        ":meth:`accept_manifest` and :meth:`accept_fragment` do, after checking."
    )

    def neighbours() -> frozenset[PeerID]:
        """
        This node's neighbours in the group now.  They change as members
        come and go; a strategy reads them when a transmission starts.
        """

    def members() -> frozenset[PeerID] | None:
        """
        Every member of the group (mailboxes included, the owner not), at
        the owner; ``None`` at any other node, which knows only its
        neighbours and the peers it meets.
        """

    def connect(peer: PeerID) -> Deferred[PeerConnection]:
        """
        A connection to ``peer`` on which both sides have proven membership
        of this group in the current epoch (the dialler first, bound to the
        Noise handshake), through the node's connection pool: the live one
        when there is one, else a new one.  The strategy sends its commands
        on it with ``callRemote``; the pool closes it once idle.

        :returns: a ``Deferred`` that fires with the
            :class:`~digitalspring.channel.PeerConnection`.
        :raises digitalspring.channel.PeerUnreachable: (through the
            Deferred) when the peer cannot be reached now.
        :raises digitalspring.multicast.MembershipNotProven: (through the
            Deferred) when the peer does not prove membership; it looks the
            same whatever the reason.
        """

    def call(
        peer: PeerID,
        command: type[amp.Command],
        arguments: dict[str, Any] | Callable[[PeerConnection], dict[str, Any] | None],
    ) -> Deferred[tuple[PeerConnection, dict[str, Any] | None]]:
        """
        Send ``command`` with ``arguments`` to ``peer`` over a connection as
        :meth:`connect` gives, a round trip sooner on a new one: the command
        goes right behind this node's membership proof instead of waiting
        for the peer's (the peer acts on it only once this node's proof
        checked).  So the peer gets it before it has proven membership: send
        this way only to members the owner named (neighbours, or members at
        the owner), whose identity the Noise handshake proved.

        :param arguments: the command's arguments, or a function that makes
            them from the connection once it is up (``None``: send nothing,
            only prove membership).
        :returns: a ``Deferred`` that fires with the connection and the
            answer (``None`` if nothing was sent), once the peer's proof
            checked too.
        :raises digitalspring.multicast.MembershipNotProven: (through the
            Deferred) when the peer does not prove membership; the
            command's own errors, and those of :meth:`connect`, otherwise.
        """

    def accept_manifest(signed_manifest: bytes) -> Deferred[Manifest]:
        """
        Check a signed manifest (canonical encoding, the epoch's signature,
        its place in the epoch's chain) and keep it, before any of its
        fragments is taken.  Accepting one already held again is not an
        error.

        :returns: a ``Deferred`` that fires with the verified
            :class:`~digitalspring.multicast.Manifest`.
        :raises digitalspring.multicast.ManifestRejected: (through the
            Deferred) for a malformed, non-canonical or forged manifest.
        :raises digitalspring.multicast.ChainRefused: (through the Deferred)
            for one outside the epoch's chain (a closed epoch, a far-future
            index).
        """

    def accept_fragment(manifest: Manifest, number: int, data: bytes) -> Deferred[bool]:
        """
        Check fragment ``number`` of a message against its accepted
        manifest (size, then hash) and store it.  When it completes the
        message, the service opens it, commits it, acknowledges it to the
        owner and hands it to the subscribers before the ``Deferred`` fires
        (a mailbox, which cannot open it, commits the ciphertext).

        This is the only way a fragment gets stored, and a strategy forwards
        only fragments it accepted here or reads back from :attr:`store`:
        so no fragment is stored or forwarded unchecked.

        :returns: a ``Deferred`` that fires with ``True`` for a fragment new
            to this node, ``False`` for one it already held.
        :raises digitalspring.multicast.FragmentRejected: (through the
            Deferred) when it does not match the manifest.
        """

    def progress(manifest: Manifest, peer: PeerID, fragments: int) -> None:
        """
        Tell the service that ``peer`` has taken ``fragments`` fragments of
        the message from this node so far, for progress bars.  Only a hint:
        the delivery report counts acknowledgements of commitment.
        """


class IAcknowledgementRelay(Interface):
    """
    The acknowledgements of one group, as a strategy that carries them
    sees them: provided by the service's contexts along with
    :class:`IStrategyContext`.

    An acknowledgement is a MAC under a key only the owner and the member
    who made it hold (the X25519 Diffie-Hellman of their identities): a
    forwarder can neither read whose it is nor forge one, and the owner
    counts each for the member who made it and no one else.
    """

    def acknowledgement(epoch: int, index: int) -> bytes:
        """
        This member's acknowledgement MAC of message ``index`` of
        ``epoch`` (whether or not it committed it: only send it once it
        has).
        """

    def acknowledged(epoch: int, index: int, macs: list[bytes]) -> Deferred[frozenset[PeerID]]:
        """
        At the owner: count the members whose acknowledgements of message
        ``index`` of ``epoch`` are among ``macs``, as if each had sent its
        own.  MACs that are no pending member's are ignored.

        :returns: a ``Deferred`` that fires with the members newly counted.
        """


class IAcknowledgementCarrier(Interface):
    """
    A strategy that carries its members' acknowledgements to the owner
    itself.  The service offers it each acknowledgement before it sends one
    to the owner directly.
    """

    def carry_acknowledgement(epoch: int, index: int, mac: bytes) -> bool:
        """
        Carry this member's acknowledgement MAC of message ``index`` of
        ``epoch`` to the owner.

        :returns: ``True`` when the strategy takes it (it then sees it to
            the owner, or leaves the owner to send the message again),
            ``False`` to let the service send it directly.
        """


class ICatchUpFetcher(Interface):
    """
    A strategy that fetches the fragments of its group's catch-ups itself
    (``docs/offline.rst``).  Catch-up is a pull of what the sources' stores
    hold, the same for every strategy: the service asks the sources for
    the manifests after the member's last message, verifies them, chooses
    a holder for each fragment it lacks (rarest first, never the owner
    while another holds it), checks what comes against the manifest
    (:meth:`IStrategyContext.accept_fragment`) and names the sources that
    held back, left gaps or misbehaved.  Only the last step, getting one
    fragment from the holder chosen, is the strategy's, when it provides
    this interface; otherwise the service asks the holder with its own
    ``group-fragment`` command, which every node answers from its store.
    """

    def fetch_fragment(peer: PeerID, manifest: Manifest, number: int) -> Deferred[bytes]:
        """
        Fragment ``number`` of the message of ``manifest``, from ``peer``, a
        source of the catch-up that said it holds it.  Whatever comes is
        checked against the manifest before it is stored: a fragment that
        does not match makes ``peer`` misbehaving for the rest of the run.

        :returns: a ``Deferred`` that fires with the fragment's bytes.
        :raises digitalspring.multicast._catchup_wire.CatchUpBusy: (through the
            Deferred) to be asked again a moment later; any other error
            counts ``peer`` as holding the fragment back, and another
            holder is asked.
        """


class IMulticastStrategy(Interface):
    """
    One group's strategy on one node, made by its plugin with that group's
    :class:`IStrategyContext`.

    Rules every strategy keeps (the conformance mixin checks them):

    - every online member gets every message, intact and in order, and no
      member gets another group's message (the context refuses it), and a
      non-member gets nothing (it cannot prove membership);
    - every fragment received goes through
      :meth:`IStrategyContext.accept_fragment` before it is stored or
      forwarded;
    - idle costs nothing: when no transmission is under way the strategy
      holds no timer and no connection, and sends nothing, however long the
      group stays quiet;
    - it keeps no state that grows with the number of messages (the store
      keeps those).
    """

    context = Attribute("The :class:`IStrategyContext` it was made with.")

    def publish(message: SealedMessage) -> Deferred[TransmissionReport]:
        """
        Start sending a message the owner has sealed and committed: its
        signed manifest and its fragments.  Called only at the owner.

        :param message: the :class:`~digitalspring.multicast.SealedMessage`.
        :returns: a ``Deferred`` that fires with a
            :class:`TransmissionReport` once this node's part of the
            transmission has ended.  It does not fail for peers that cannot
            be reached: they are in the report's ``unreached``.
        """

    def stop() -> Deferred[None]:
        """
        End every transmission under way (the node is stopping, or the
        group is being deleted or left): cancel timers, stop sending.

        :returns: a ``Deferred`` that fires once nothing of the strategy
            runs any more; pending :meth:`publish` Deferreds have fired by
            then, with what was reached so far.
        """


class IStrategyRouter(Interface):
    """
    The node's multicast service, as a strategy plugin's responders see it:
    from a group ID in an incoming command to that group's strategy.
    """

    def strategy(connection: PeerConnection, group_id: bytes) -> Deferred[IMulticastStrategy]:
        """
        The strategy of group ``group_id`` at this node, for a command that
        came on ``connection``.

        :returns: a ``Deferred`` that fires with the
            :class:`IMulticastStrategy`.
        :raises digitalspring.multicast.MembershipNotProven: (through the
            Deferred) unless the peer on ``connection`` has proven
            membership of that group in the current epoch on this very
            connection, and this node takes part in that group with the
            plugin's strategy; the refusal is the same whatever the reason,
            so it tells a stranger nothing about which groups exist here.
        """


class IMulticastStrategyPlugin(IPlugin):
    """
    A multicast strategy that can be installed as a Twisted plugin: an
    object providing this interface in a module of ``twisted/plugins/`` is
    found by :func:`digitalspring.multicast.strategy_plugins`.
    """

    name = Attribute(
        "The name a group records for its strategy, e.g. ``'unicast'``: a ``str`` of "
        "lowercase letters, digits and dashes."
    )

    description = Attribute("One line on what the strategy does, for help texts.")

    def make_strategy(context: IStrategyContext) -> IMulticastStrategy:
        """
        Make the strategy of one group at this node.  Does no I/O and starts
        no timer: an idle group costs nothing.

        :param context: the group as this node sees it.
        :returns: a provider of :class:`IMulticastStrategy`.
        """

    def locator(connection: PeerConnection, router: IStrategyRouter) -> CommandLocator:
        """
        The responders of the strategy's AMP commands on one connection.
        The service adds this to every connection of the pool, whether or
        not any group uses the strategy.

        Each command carries the group's ID; its responder asks
        ``router.strategy(connection, group_id)`` for the group's strategy,
        which refuses peers that did not prove membership.  Command names
        start with the strategy's name (``unicast-fragment``), so that
        plugins do not collide.

        :param connection: the :class:`~digitalspring.channel.PeerConnection`.
        :param router: the service's router.
        :returns: an ``amp.CommandLocator``.
        """
