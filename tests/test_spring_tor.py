"""
``spring`` over Tor (issue 11): onion-only nodes on the run's private Tor
network (``digitalspring.testing.shared_tor_network``) get a 1 MiB message
through the default strategy.

These tests need ``tor`` (``apt-get install tor``) and skip without it; as
root they run inside a network namespace that has nothing but ``lo``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase

from digitalspring.directory import AddressBook
from digitalspring.identity import PeerID, load_or_create_identity
from digitalspring.multicast import DEFAULT_STRATEGY, MulticastService, ReceivedMessage
from digitalspring.node import Node
from digitalspring.tap import Options, makeService
from digitalspring.testing import PrivateTorNetwork, TorClient, enter_shared_tor_network
from digitalspring.transport import onion_host
from digitalspring.transport._torkey import load_or_create_seed

#: The members, besides the owner.
MEMBERS = 5
#: The message: 1 MiB, 17 fragments.
SIZE = 1024 * 1024


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


async def _client(network: PrivateTorNetwork, name: str) -> TorClient:
    """
    The network's client tor called ``name``, started on first use and
    shared by the tests after.
    """
    if name == "client0":
        return network.client
    existing = network.clients.get(name)
    if existing is not None and existing.process.running:
        return existing
    return await network.add_client(name)


class SpringOverTorTests(TestCase):
    """
    An owner and five members, every one an onion-only node built as
    ``twistd dspring --onion-only`` builds it, attached to one of two
    client tors, each with the others in its address book.
    """

    timeout = 300

    async def setUp(self) -> None:  # type: ignore[override]
        self.reactor = _reactor()
        self.network = await enter_shared_tor_network(self, self.reactor)

    async def _node(self, data_dir: FilePath[str], client: TorClient) -> Node:
        options = Options()
        options.parseOptions(
            [
                "--data-dir", data_dir.path, "--no-passphrase", "--onion-only",
                "--tor-control", f"tcp:127.0.0.1:{client.control_port}",
            ]
        )  # fmt: skip
        node = makeService(options, self.reactor)
        assert isinstance(node, Node)
        node.startService()
        self.addCleanup(node.stopService)
        await node.ready
        return node

    async def _until(self, condition: Any, within: float, what: str) -> None:
        deadline = self.reactor.seconds() + within
        while not condition():
            if self.reactor.seconds() > deadline:
                self.fail(f"{what} not within {within} s")
            await deferLater(self.reactor, 0.2, lambda: None)

    async def test_one_mebibyte_to_five_onion_only_members(self) -> None:
        """
        The owner creates a group (``spring``, the default) of five
        onion-only members and sends it 1 MiB: every member commits it,
        whole, and the owner's delivery report counts all five.
        """
        root = FilePath(self.mktemp())
        names = ["owner", *(f"m{i}" for i in range(MEMBERS))]
        dirs = {name: root.child(name) for name in names}
        peers: dict[str, PeerID] = {}
        onions: dict[str, str] = {}
        for name in names:
            identity, _ = load_or_create_identity(dirs[name], None, unencrypted=True)
            peers[name] = identity.peer_id
            seed = load_or_create_seed(dirs[name].child("tor").child("onion-default.key"))
            onions[name] = f"tor:{onion_host(seed)}:7655"
        for name in names:
            book = AddressBook.in_data_dir(dirs[name])
            for other in names:
                if other != name:
                    book.add(peers[other], onions[other], other)
        clients = [self.network.client, await _client(self.network, "spring")]
        nodes = [
            await self._node(dirs[name], clients[i % len(clients)]) for i, name in enumerate(names)
        ]
        services: list[MulticastService] = []
        for node in nodes:
            assert node.multicast is not None
            services.append(node.multicast)
        owner, members = services[0], services[1:]

        group_id = await owner.create_group("over tor")
        self.assertEqual((await owner.store.group(group_id)).strategy, DEFAULT_STRATEGY)
        self.assertEqual(DEFAULT_STRATEGY, "spring")
        for name in names[1:]:
            await owner.add_member(group_id, peers[name])
        joined: list[set[bytes]] = [set() for _ in members]

        def all_joined() -> bool:
            for member, groups in zip(members, joined, strict=True):
                member.store.groups().addCallback(
                    lambda found, groups=groups: groups.update(
                        g.group_id for g in found if g.state == "active"
                    )
                )
            return all(group_id in groups for groups in joined)

        await self._until(all_joined, 120, "every member's joining")
        got: list[list[ReceivedMessage]] = [[] for _ in members]
        for member, messages in zip(members, got, strict=True):
            member.subscribe(group_id, messages.append)

        data = bytes(range(256)) * (SIZE // 256)
        report = await owner.publish(group_id, data, "big.bin")
        settled: Deferred[Any] = report.settled()
        await self._until(lambda: settled.called, 180, "every member's commit")
        self.assertEqual(report.committed, frozenset(peers[name] for name in names[1:]))
        for messages in got:
            self.assertEqual([(m.file_name, m.data) for m in messages], [("big.bin", data)])
