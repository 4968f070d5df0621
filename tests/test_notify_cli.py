"""
``dspring notify-boxes`` and ``twistd dspring --notify-box``: the options,
and the control API's routes on two real nodes over TCP on loopback.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import deferLater
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from digitalspring.cli import Options as CLIOptions
from digitalspring.control import ControlClient, ControlError
from digitalspring.directory import AddressBook
from digitalspring.tap import Options, store_limits

from ._nodes import node_in_process


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


class OptionTests(SynchronousTestCase):
    def test_commands(self) -> None:
        """
        ``notify-boxes`` lists by default; ``add`` and ``remove`` take one
        peer.
        """
        options = CLIOptions()
        options.parseOptions(["notify-boxes"])
        self.assertEqual(options.subOptions.subCommand, "list")
        options = CLIOptions()
        options.parseOptions(["notify-boxes", "add", "bob"])
        self.assertEqual(options.subOptions.subOptions["peer"], "bob")
        self.assertRaises(usage.UsageError, CLIOptions().parseOptions, ["notify-boxes", "add"])

    def test_node_options(self) -> None:
        """
        ``--notify-box`` serves with the work and quotas given (a box's
        total is its members times its quota per member); those options
        alone, or out of range, are refused.
        """
        options = Options()
        options.parseOptions(
            ["--notify-box", "--notify-box-work", "20", "--notify-box-members", "10"]
        )
        self.assertEqual(options["notify-box-work"], 20)
        limits = store_limits(options)
        self.assertEqual((limits.notify_members_total, limits.notifications_total), (10, 640))
        for argv in (
            ["--notify-box-work", "12"],
            ["--notify-box", "--notify-box-work", "25"],
            ["--notify-box", "--notify-box-quota", "0"],
        ):
            self.assertRaises(usage.UsageError, Options().parseOptions, argv)


class NotifyRouteTests(TestCase):
    """
    The notification box routes of two real nodes.
    """

    async def _until(self, client: ControlClient, check: Any) -> dict[str, Any]:
        for _ in range(200):
            answer: dict[str, Any] = await client.call("notify-boxes")
            if check(answer):
                return answer
            await deferLater(_reactor(), 0.05, lambda: None)
        self.fail(f"not so in time: {answer}")

    async def test_add_list_remove(self) -> None:
        """
        A member adds a contact serving as a box, which then serves it; it
        lists it; it removes it, and the box forgets it.  A box cannot be
        the node itself, nor removed when it is not one.
        """
        box, box_client = await node_in_process(
            self, "box", "--notify-box", "--notify-box-work", "8"
        )
        member, client = await node_in_process(self, "member")
        assert member.groups is not None
        AddressBook.in_data_dir(member.groups._book.path.parent()).add(
            box.peer_id, box.addresses()[0], "box"
        )
        added = await client.call("notify-box-add", {"peer": "box"})
        self.assertEqual(added["boxes"], [str(box.peer_id)])
        served = await self._until(box_client, lambda a: a["members"])
        self.assertEqual(served["members"][0]["peer"], str(member.peer_id))
        self.assertEqual((served["serving"], served["work_bits"]), (True, 8))
        listed = await client.call("notify-boxes")
        self.assertEqual((listed["boxes"], listed["serving"]), ([str(box.peer_id)], False))
        with self.assertRaises(ControlError):
            await client.call("notify-box-add", {"peer": str(member.peer_id)})
        removed = await client.call("notify-box-remove", {"peer": "box"})
        self.assertEqual(removed["boxes"], [])
        await self._until(box_client, lambda a: not a["members"])
        with self.assertRaises(ControlError):
            await client.call("notify-box-remove", {"peer": "box"})
