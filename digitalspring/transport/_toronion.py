# -*- test-case-name: tests.test_tor -*-
"""
Publishing an onion service, sans I/O: the ``ADD_ONION`` command with the
defences tor offers, and when a published service is reachable, read from
tor's ``HS_DESC`` events.  :class:`~._torcontrol.TxtorconControl` carries
them out.  See ``docs/tor.rst``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from attrs import define, field, frozen

#: Keywords of ``ADD_ONION`` that only tor 0.4.8 and later (built with its
#: ``pow`` module) know.
POW_KEYWORDS = ("PoWDefensesEnabled", "PoWQueueRate", "PoWQueueBurst")

_SERVICE_ID = re.compile(r"^ServiceID=([a-z2-7]{56})$", re.MULTILINE)


@frozen
class OnionDefences:
    """
    What tor is asked to do against floods of connections to one of our
    onion services (``docs/tor.rst`` gives the reasoning for each number).

    :ivar pow: turn on tor's proof-of-work defence (proposal 327): when
        introductions arrive faster than ``pow_queue_rate``, tor asks
        clients for work and serves the most work first.
    :ivar pow_queue_rate: introductions per second tor hands on from its
        queue, ``pow_queue_burst`` at most at once.
    :ivar max_streams: streams one rendezvous circuit (one client) may have
        open at once; one more and tor closes that client's circuit.  This
        is the per-client connection limit of onion connections, which all
        come from tor on 127.0.0.1 and so share one source address.
    """

    pow: bool = True
    pow_queue_rate: int = 25
    pow_queue_burst: int = 250
    max_streams: int = 8


#: The defences every onion service of the node gets.
DEFAULT_DEFENCES = OnionDefences()


def add_onion_command(
    key_blob: str, virtual_port: int, local_port: int, defences: OnionDefences
) -> str:
    """
    The ``ADD_ONION`` command for a v3 service with the key ``key_blob``
    (``ED25519-V3:...``) forwarding ``virtual_port`` to
    ``127.0.0.1:local_port``, with ``defences``.  The service lives as long
    as the control connection that added it.
    """
    words = [f"ADD_ONION {key_blob}"]
    if defences.max_streams:
        words.append("Flags=MaxStreamsCloseCircuit")
        words.append(f"MaxStreams={defences.max_streams}")
    if defences.pow:
        words.append("PoWDefensesEnabled=1")
        words.append(f"PoWQueueRate={defences.pow_queue_rate}")
        words.append(f"PoWQueueBurst={defences.pow_queue_burst}")
    words.append(f"Port={virtual_port},127.0.0.1:{local_port}")
    return " ".join(words)


def service_id(reply: str) -> str | None:
    """
    The service id (the ``.onion`` host name without ``.onion``) in tor's
    reply to ``ADD_ONION``, if there is one.
    """
    match = _SERVICE_ID.search(reply)
    return match.group(1) if match else None


def _hsdir(name: str) -> str:
    # Tor names an HSDir "$FINGERPRINT~nickname" or "$FINGERPRINT".
    return name.split("~")[0].lstrip("$").upper()


@define
class DescriptorUploads:
    """
    Follows the uploads of one onion service's descriptors from tor's
    ``HS_DESC`` events and says when clients can find it.

    Tor keeps two descriptors of a v3 service, for the current and the next
    time period, each with its own blinded key (the ``UPLOAD`` event's
    descriptor id) and each uploaded to several HSDirs.  A client looks up
    the current one; which of the two is uploaded first depends on which
    introduction circuits open first.  So the service is reachable once
    *both* descriptors are stored on an HSDir and no upload is still in
    flight: a client that asks an HSDir whose upload has not landed gets a
    404, and tor then avoids that HSDir for this service (5 s on a test
    network, 15 min on Tor's) -- a failed first dial can lock a peer out.

    :param host: the service id (host name without ``.onion``).
    :param descriptors: how many descriptors tor uploads for a service.
    """

    host: str
    descriptors: int = 2
    #: Descriptor ids of uploads in flight, by HSDir, oldest first.
    _pending: dict[str, list[str]] = field(factory=dict, init=False)
    _stored: set[str] = field(factory=set, init=False)
    _seen: set[str] = field(factory=set, init=False)
    #: HSDirs where an upload failed, with tor's reason.
    failures: dict[str, str] = field(factory=dict, init=False)

    def event(self, text: str) -> None:
        """
        Take an ``HS_DESC`` event (its text after ``HS_DESC``).  Events
        about other services, and fetches, are ignored.
        """
        words = text.split()
        if len(words) < 4 or words[1] != self.host:
            return
        action, hsdir = words[0], _hsdir(words[3])
        if action == "UPLOAD" and len(words) >= 5:
            self._seen.add(words[4])
            self._pending.setdefault(hsdir, []).append(words[4])
        elif action in ("UPLOADED", "FAILED") and self._pending.get(hsdir):
            descriptor = self._pending[hsdir].pop(0)
            if action == "UPLOADED":
                self._stored.add(descriptor)
            else:
                reasons = [w for w in words[4:] if w.startswith("REASON=")]
                self.failures[hsdir] = reasons[0][len("REASON=") :] if reasons else "unknown"

    @property
    def stored(self) -> bool:
        """
        Whether every descriptor is stored on at least one HSDir.
        """
        return len(self._seen) >= self.descriptors and self._seen <= self._stored

    @property
    def reachable(self) -> bool:
        """
        Whether clients find the service: every descriptor stored, and no
        upload in flight.
        """
        return self.stored and not any(self._pending.values())

    def in_flight(self) -> Iterable[str]:
        """
        The HSDirs that still have an upload of ours in flight.
        """
        return [hsdir for hsdir, pending in self._pending.items() if pending]
