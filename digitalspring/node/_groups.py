# -*- test-case-name: tests.test_groups_cli -*-
"""
The node's groups through the control API: the routes behind ``dspring
group``, ``send``, ``inbox``, ``follow``, ``invitations``, ``accept`` and
``block``, and the event stream of incoming messages and delivery
progress.

Groups are named as the user names them: by their hex ID, or by a local
petname, which shares one namespace with the contacts' names (no group
takes a name a contact has, and a name both have is refused as
ambiguous).  ``send`` and ``inbox`` also take a contact: a conversation
with it is the two-member group this node owns with it (made on first
use, and remembered in the ``direct:PEER_ID`` setting) together with the
one the contact owns with this node (a group the contact owns, offered
under the name :data:`DIRECT_NAME`).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.filepath import FilePath

from ..control import BadRequest, EventSink, StreamHandler
from ..directory import AddressBook, BadName, UnknownContact, check_name
from ..errors import DigitalSpringError
from ..identity import InvalidPeerID, PeerID
from ..multicast import (
    DEFAULT_STRATEGY,
    MAX_FILE_NAME,
    MAX_PADDED_SIZE,
    Arrival,
    DeliveryReport,
    GroupError,
    ReceivedMessage,
    UnknownStrategy,
)
from ..storage import Group, NotStored, SetPetname, SetSetting, StorageError

if TYPE_CHECKING:
    from ..multicast import MulticastService
    from ._node import Node

#: The name a node offers its side of a conversation under.
DIRECT_NAME = "direct"

#: The longest text an event carries; a longer one is read with the
#: ``message`` route.
MAX_EVENT_TEXT = 64 * 1024

#: The most messages ``inbox`` returns at once.
MAX_INBOX = 1000

#: Seconds the first message of a conversation waits for the peer to take
#: its invitation (checked every ``_POLL`` seconds); past it, the message
#: goes, and reaches a peer that was out of reach when it is back.
INVITATION_WAIT = 10.0
_POLL = 0.05

#: Seconds between two ``receiving`` events of one message (its last
#: fragment's always goes): a 64 MiB file has thousands of fragments, and a
#: progress bar needs a few updates a second.
RECEIVING_INTERVAL = 0.1

#: Messages whose last ``receiving`` event is remembered (to space the
#: next); past it, the oldest is forgotten.
MAX_RECEIVING = 256

_Handler = Callable[[dict[str, Any]], Any]

#: The lists of peers in a catch-up's report.
_REPORT_PEERS = ("held_back", "behind", "gaps", "misbehaved", "unreachable")


class NoGroups(DigitalSpringError):
    """
    The node's groups are not running yet (its store is still opening).
    """


class AmbiguousName(BadRequest):
    """
    The name is both a group's and a contact's: rename one, or give the
    group's ID or the peer's.
    """


def _direct_setting(peer: PeerID) -> str:
    return f"direct:{peer}"


class GroupRoutes:
    """
    The control routes of a node's groups.

    :param node: the node; its multicast service is given by
        :meth:`started` once the store is open.
    :param data_dir: where the address book is.
    """

    log = Logger()

    def __init__(self, node: Node, data_dir: FilePath[str]) -> None:
        self._node = node
        self._book = AddressBook.in_data_dir(data_dir)
        self._service: MulticastService | None = None
        self._sinks: dict[EventSink, Callable[[dict[str, Any]], bool]] = {}
        #: group ID -> the peer whose conversation it is part of.
        self._conversations: dict[bytes, PeerID] = {}
        #: (group, epoch, index) -> when its last ``receiving`` event went.
        self._receiving: dict[tuple[bytes, int, int], float] = {}

    def routes(self) -> dict[str, tuple[bytes, _Handler]]:
        return {
            "group-create": (b"POST", self.group_create),
            "group-add": (b"POST", self.group_add),
            "group-remove": (b"POST", self.group_remove),
            "group-list": (b"GET", self.group_list),
            "group-show": (b"POST", self.group_show),
            "group-name": (b"POST", self.group_name),
            "group-leave": (b"POST", self.group_leave),
            "group-delete": (b"POST", self.group_delete),
            "group-catch-up": (b"POST", self.group_catch_up),
            "mailbox-status": (b"GET", self.mailbox_status),
            "notify-boxes": (b"GET", self.notify_boxes),
            "notify-box-add": (b"POST", self.notify_box_add),
            "notify-box-remove": (b"POST", self.notify_box_remove),
            "send": (b"POST", self.send),
            "inbox": (b"POST", self.inbox),
            "message": (b"POST", self.message),
            "invitations": (b"GET", self.invitations),
            "accept": (b"POST", self.accept),
            "decline": (b"POST", self.decline),
            "block": (b"POST", self.block),
            "unblock": (b"POST", self.unblock),
        }

    def streams(self) -> dict[str, StreamHandler]:
        return {"events": self.events}

    def started(self, service: MulticastService) -> None:
        """
        The groups run on ``service`` from now on.
        """
        self._service = service
        service.subscribe(None, self._received)
        service.follow_arrivals(self._arrived)
        Deferred.fromCoroutine(self._load_conversations()).addErrback(
            lambda failure: self.log.failure("cannot read the conversations", failure)
        )

    async def _load_conversations(self) -> None:
        for group in await self.service.group_list():
            await self._learn_conversation(group)

    async def _learn_conversation(self, group: Group) -> PeerID | None:
        """
        The peer whose conversation ``group`` is part of, if it is.
        """
        known = self._conversations.get(group.group_id)
        if known is not None:
            return known
        peer = None
        if group.role == "member" and group.name == DIRECT_NAME:
            peer = group.owner
        elif group.role == "owner" and group.name == DIRECT_NAME:
            for member in await self.service.store.members(group.group_id):
                stored = await self.service.store.setting(_direct_setting(member.peer))
                if stored == group.group_id.hex():
                    peer = member.peer
        if peer is not None:
            self._conversations[group.group_id] = peer
        return peer

    @property
    def service(self) -> MulticastService:
        if self._service is None:
            raise NoGroups("the node's groups are still starting; try again")
        return self._service

    # --- names -----------------------------------------------------------------

    def _peer(self, body: dict[str, Any], key: str = "peer") -> PeerID:
        try:
            return self._book.find(str(body.get(key, "")))
        except (UnknownContact, StorageError) as e:
            raise BadRequest(str(e)) from None
        except DigitalSpringError as e:
            raise BadRequest(str(e)) from None

    def _contact_names(self) -> dict[PeerID, str]:
        try:
            return {c.peer_id: c.name for c in self._book.contacts() if c.name is not None}
        except DigitalSpringError:
            return {}

    async def _group(self, text: object) -> Group:
        """
        The group that ``text`` names: its hex ID or its petname.

        :raises BadRequest: when it names none, or names a contact.
        """
        if not isinstance(text, str) or not text:
            raise BadRequest("group is a group's ID or name")
        service = self.service
        if len(text) == 64:
            try:
                return await service.store.group(service.parse_id(text))
            except (GroupError, NotStored):
                pass
        found = [
            g
            for g in await service.group_list()
            if g.petname is not None and g.petname.lower() == text.lower()
        ]
        contact = text.lower() in (name.lower() for name in self._contact_names().values())
        if found and contact:
            # A contact named later: the user must say which.
            raise AmbiguousName(
                f"{text!r} names both a group and a contact: rename one "
                "('dspring group name' or 'dspring contacts name'), or give the group's ID"
            )
        if found:
            return found[0]
        if contact:
            raise BadRequest(f"{text!r} is a contact, not a group")
        raise BadRequest(f"no group is named {text!r} (see 'dspring group list')")

    async def _check_unused(self, name: str, group_id: bytes | None = None) -> None:
        try:
            check_name(name)
        except BadName as e:
            raise BadRequest(str(e)) from None
        for peer, contact in self._contact_names().items():
            if contact.lower() == name.lower():
                raise BadRequest(f"the name {contact!r} is already your contact {peer}'s")
        for group in await self.service.group_list():
            if group.group_id == group_id:
                continue
            if group.petname is not None and group.petname.lower() == name.lower():
                raise BadRequest(f"the name {group.petname!r} is already a group's")

    def _shown_group(self, group: Group, names: dict[PeerID, str]) -> dict[str, Any]:
        peer = self._conversations.get(group.group_id)
        return {
            "group": group.group_id.hex(),
            "name": group.name,
            "petname": group.petname,
            "owner": str(group.owner),
            "owner_name": names.get(group.owner),
            "role": group.role,
            "state": group.state,
            "strategy": group.strategy,
            "conversation": None if peer is None else str(peer),
            "conversation_name": None if peer is None else names.get(peer),
        }

    # --- groups ------------------------------------------------------------------

    async def group_create(self, body: dict[str, Any]) -> dict[str, Any]:
        """
        Create a group named ``name``, run by the multicast strategy
        ``strategy`` (one of the node's strategy plugins; by default
        :data:`~digitalspring.multicast.DEFAULT_STRATEGY`).
        """
        name = body.get("name")
        if not isinstance(name, str):
            raise BadRequest("name is the group's name")
        strategy = body.get("strategy", DEFAULT_STRATEGY)
        installed = self.service.plugins()
        if not isinstance(strategy, str) or strategy not in installed:
            raise BadRequest(str(UnknownStrategy(str(strategy), list(installed))))
        await self._check_unused(name)
        group_id = await self.service.create_group(name, strategy)
        await self.service.store.commit(SetPetname(group_id, name))
        return {"group": group_id.hex(), "name": name, "strategy": strategy}

    async def group_add(self, body: dict[str, Any]) -> dict[str, Any]:
        group = await self._group(body.get("group"))
        peer = self._peer(body)
        role = body.get("role", "member")
        if role not in ("member", "mailbox"):
            raise BadRequest("role is member or mailbox")
        retention = body.get("retention")
        if retention is not None and (role != "mailbox" or not isinstance(retention, int)):
            raise BadRequest("retention is a mailbox's, a whole number of seconds")
        await self._refused_as_bad_request(
            self.service.add_member(group.group_id, peer, role, retention)
        )
        return {
            "group": group.group_id.hex(),
            "peer": str(peer),
            "role": role,
            "retention": retention,
        }

    async def group_remove(self, body: dict[str, Any]) -> dict[str, Any]:
        group = await self._group(body.get("group"))
        peer = self._peer(body)
        await self._refused_as_bad_request(self.service.remove_member(group.group_id, peer))
        return {"group": group.group_id.hex(), "peer": str(peer)}

    async def group_list(self, body: dict[str, Any]) -> dict[str, Any]:
        names = self._contact_names()
        groups = await self.service.group_list()
        return {"groups": [self._shown_group(g, names) for g in groups]}

    async def group_show(self, body: dict[str, Any]) -> dict[str, Any]:
        group = await self._group(body.get("group"))
        names = self._contact_names()
        shown = await self.service.show(group.group_id)
        shown.update(self._shown_group(group, names))
        shown["names"] = {str(peer): name for peer, name in names.items()}
        return shown

    async def group_name(self, body: dict[str, Any]) -> dict[str, Any]:
        group = await self._group(body.get("group"))
        name = body.get("name")
        if not isinstance(name, str):
            raise BadRequest("name is the group's new name")
        await self._check_unused(name, group.group_id)
        await self.service.store.commit(SetPetname(group.group_id, name))
        return {"group": group.group_id.hex(), "petname": name}

    async def group_leave(self, body: dict[str, Any]) -> dict[str, Any]:
        group = await self._group(body.get("group"))
        await self._refused_as_bad_request(self.service.leave_group(group.group_id))
        return {"group": group.group_id.hex()}

    async def group_delete(self, body: dict[str, Any]) -> dict[str, Any]:
        group = await self._group(body.get("group"))
        await self._refused_as_bad_request(self.service.delete_group(group.group_id))
        peer = self._conversations.pop(group.group_id, None)
        if peer is not None and group.role == "owner":
            await self.service.store.commit(SetSetting(_direct_setting(peer), None))
        return {"group": group.group_id.hex()}

    async def group_catch_up(self, body: dict[str, Any]) -> dict[str, Any]:
        """
        Catch up a group this node is a member of now: its report, with
        ``names``, the contact's name of each source it names that has one.
        """
        group = await self._group(body.get("group"))
        report = await self._refused_as_bad_request(self.service.catch_up_group(group.group_id))
        answer: dict[str, Any] = report.as_json()
        named = {p for what in _REPORT_PEERS for p in answer[what]}
        answer["names"] = {
            str(peer): name for peer, name in self._contact_names().items() if str(peer) in named
        }
        return answer

    async def mailbox_status(self, body: dict[str, Any]) -> dict[str, Any]:
        """
        What this node holds as a mailbox, and its quotas.
        """
        status: dict[str, Any] = await self.service.mailbox_status()
        return status

    async def notify_boxes(self, body: dict[str, Any]) -> dict[str, Any]:
        """
        Our notification boxes, and what this node holds as one.
        """
        status: dict[str, Any] = await self.service.notify_box_status()
        return status

    async def notify_box_add(self, body: dict[str, Any]) -> dict[str, Any]:
        """
        Use a peer (a contact's name or a peer ID) as a notification box.
        """
        boxes = await self._refused_as_bad_request(self.service.add_notify_box(self._peer(body)))
        return {"boxes": [str(b) for b in boxes]}

    async def notify_box_remove(self, body: dict[str, Any]) -> dict[str, Any]:
        """
        Stop using a peer as a notification box.
        """
        boxes = await self._refused_as_bad_request(
            self.service.remove_notify_box(self._peer(body))
        )
        return {"boxes": [str(b) for b in boxes]}

    async def _refused_as_bad_request(self, work: Deferred[Any]) -> Any:
        try:
            return await work
        except (GroupError, NotStored) as e:
            raise BadRequest(str(e)) from None

    # --- sending -------------------------------------------------------------------

    async def _target(self, text: object) -> tuple[Group | None, PeerID | None]:
        """
        What ``send`` and ``inbox`` name: a group, or a contact (by name or
        peer ID) for the conversation with it.
        """
        if not isinstance(text, str) or not text:
            raise BadRequest("to is a group's ID or name, or a contact")
        try:
            return await self._group(text), None
        except AmbiguousName:
            raise
        except BadRequest as not_group:
            try:
                peer = self._book.find(text)
            except DigitalSpringError:
                raise not_group from None
            if peer == self._node.peer_id:
                raise BadRequest("that is this node's own peer ID") from None
            return None, peer

    async def _direct_group(self, peer: PeerID) -> tuple[bytes, bool]:
        """
        This node's group of the conversation with ``peer``, made (and the
        peer invited) on first use.

        :returns: its ID, and whether it was made now.
        """
        service = self.service
        stored = await service.store.setting(_direct_setting(peer))
        if stored is not None:
            return bytes.fromhex(stored), False
        group_id = await service.create_group(DIRECT_NAME)
        await service.store.commit(SetSetting(_direct_setting(peer), group_id.hex()))
        self._conversations[group_id] = peer
        await service.add_member(group_id, peer)
        # The first message would reach the peer before its invitation
        # did, be refused, and wait for the owner's retry: wait (a little)
        # for the invitation to be taken first.
        for _ in range(int(INVITATION_WAIT / _POLL)):
            members = await service.store.members(group_id)
            if any(m.peer == peer and m.status == "active" for m in members):
                break
            await deferLater(self._node.reactor, _POLL, lambda: None)
        return group_id, True

    async def send(self, body: dict[str, Any]) -> dict[str, Any]:
        group, peer = await self._target(body.get("to"))
        text, path = body.get("text"), body.get("path")
        if (text is None) == (path is None):
            raise BadRequest("give text, or path (a file the node reads)")
        data: bytes | str
        file_name = None
        if text is not None:
            if not isinstance(text, str):
                raise BadRequest("text is a string")
            data = text
        else:
            if not isinstance(path, str):
                raise BadRequest("path is a file's absolute path")
            data, file_name = self._read_file(path)
        return await self._send(group, peer, data, file_name)

    async def send_file(self, to: str, data: bytes, file_name: str) -> dict[str, Any]:
        """
        Send a file whose bytes the caller holds (the web client's upload)
        to a group or a contact, as ``send`` sends one the node reads.
        """
        group, peer = await self._target(to)
        if not 0 < len(file_name.encode("utf-8")) <= MAX_FILE_NAME:
            raise BadRequest(f"a file's name has 1 to {MAX_FILE_NAME} bytes")
        if len(data) > MAX_PADDED_SIZE:
            raise BadRequest(f"the file is over {MAX_PADDED_SIZE} bytes")
        return await self._send(group, peer, data, file_name)

    async def _send(
        self, group: Group | None, peer: PeerID | None, data: bytes | str, file_name: str | None
    ) -> dict[str, Any]:
        created = False
        if group is None:
            assert peer is not None
            group_id, created = await self._direct_group(peer)
        else:
            group_id = group.group_id
            if group.role != "owner":
                raise BadRequest(
                    "only a group's owner sends to it; to answer its owner, "
                    f"send to the owner ({group.owner})"
                )
        report = await self._refused_as_bad_request(
            self.service.publish(group_id, data, file_name)
        )
        sealed = await self.service.sealed_message(group_id, report.epoch, report.index)
        fragments = len(sealed.fragments)
        mailboxes = sorted(
            str(m.peer)
            for m in await self.service.store.members(group_id)
            if m.role == "mailbox" and m.peer in report.pending | report.committed
        )
        self._follow_report(report, fragments, mailboxes)
        answer = self._delivery(report, fragments, mailboxes)
        answer["created"] = created
        return answer

    def _read_file(self, path: str) -> tuple[bytes, str]:
        if not os.path.isabs(path):
            raise BadRequest("path is a file's absolute path")
        file = FilePath(path)
        try:
            size = file.getsize()
            if size > MAX_PADDED_SIZE:
                raise BadRequest(f"{path} is over {MAX_PADDED_SIZE} bytes")
            return file.getContent(), file.basename()
        except OSError as e:
            raise BadRequest(f"the node cannot read {path}: {e.strerror or e}") from None

    def _delivery(
        self, report: DeliveryReport, fragments: int, mailboxes: list[str]
    ) -> dict[str, Any]:
        delivery = report.as_json()
        delivery["fragments"] = fragments
        delivery["mailboxes"] = mailboxes
        delivery["progress"] = {str(p): n for p, n in report.progress.items()}
        delivery["transmitted"] = report.transmitted.called
        conversation = self._conversations.get(report.group_id)
        delivery["conversation"] = None if conversation is None else str(conversation)
        return delivery

    def _follow_report(self, report: DeliveryReport, fragments: int, mailboxes: list[str]) -> None:
        def changed(report: DeliveryReport) -> None:
            self._broadcast("delivery", self._delivery(report, fragments, mailboxes))

        stop = report.follow(changed)

        def transmitted(result: object) -> object:
            self._broadcast("delivery", self._delivery(report, fragments, mailboxes))
            if not report.pending:
                stop()
            return result

        report.transmitted.addBoth(transmitted)
        report.settled().addCallback(lambda ignored: stop())

    # --- receiving -----------------------------------------------------------------

    def _message(
        self, message: ReceivedMessage, group: Group, names: dict[PeerID, str], full: bool
    ) -> dict[str, Any]:
        conversation = self._conversations.get(message.group_id)
        shown: dict[str, Any] = {
            "group": message.group_id.hex(),
            "group_name": group.petname,
            "proposed_name": group.name,
            "conversation": None if conversation is None else str(conversation),
            "conversation_name": None if conversation is None else names.get(conversation),
            "outgoing": group.role == "owner",
            "epoch": message.epoch,
            "index": message.index,
            "sender": str(message.sender),
            "sender_name": names.get(message.sender),
            "sent_at": message.sent_at,
            "type": message.content_type,
            "size": len(message.data),
        }
        if message.content_type == "file":
            shown["file_name"] = message.file_name
            if full:
                shown["data"] = base64.b64encode(message.data).decode("ascii")
        elif full or len(message.data) <= MAX_EVENT_TEXT:
            shown["text"] = message.data.decode("utf-8", "replace")
        return shown

    def _received(self, message: ReceivedMessage) -> None:
        Deferred.fromCoroutine(self._announce(message)).addErrback(
            lambda failure: self.log.failure("cannot announce a message", failure)
        )

    async def _announce(self, message: ReceivedMessage) -> None:
        if not self._sinks:
            return
        group = await self.service.store.group(message.group_id)
        await self._learn_conversation(group)
        self._broadcast("message", self._message(message, group, self._contact_names(), False))

    def _arrived(self, arrival: Arrival) -> None:
        """
        Tell the event streams how much of a message this node holds, at
        most every :data:`RECEIVING_INTERVAL` seconds for each message, and
        always once it holds every fragment.
        """
        if not self._sinks:
            return
        key = (arrival.group_id, arrival.epoch, arrival.index)
        whole = arrival.fragments >= arrival.total
        last = self._receiving.get(key)
        if not whole and last is not None and arrival.at - last < RECEIVING_INTERVAL:
            return
        if whole:
            self._receiving.pop(key, None)
        else:
            self._receiving.pop(key, None)
            self._receiving[key] = arrival.at
            if len(self._receiving) > MAX_RECEIVING:
                del self._receiving[next(iter(self._receiving))]
        conversation = self._conversations.get(arrival.group_id)
        self._broadcast(
            "receiving",
            {
                "group": arrival.group_id.hex(),
                "conversation": None if conversation is None else str(conversation),
                "epoch": arrival.epoch,
                "index": arrival.index,
                "fragments": arrival.fragments,
                "total": arrival.total,
                "at": arrival.at,
            },
        )

    def _broadcast(self, event: str, data: dict[str, Any]) -> None:
        for sink, wanted in list(self._sinks.items()):
            if wanted(data):
                sink.send(event, data)

    async def events(self, query: dict[str, str], sink: EventSink) -> Callable[[], None]:
        """
        ``GET /v1/events[?to=GROUP|CONTACT]``: the stream of ``message``,
        ``delivery`` and ``receiving`` events, of every group or of one
        group or conversation.
        """
        wanted: Callable[[dict[str, Any]], bool] = lambda data: True  # noqa: E731
        to = query.get("to")
        if to:
            group, peer = await self._target(to)
            if group is not None:
                chosen = group.group_id.hex()
                wanted = lambda data: data["group"] == chosen  # noqa: E731
            else:
                chosen = str(peer)
                wanted = lambda data: data.get("conversation") == chosen  # noqa: E731
        self._sinks[sink] = wanted

        def stop() -> None:
            self._sinks.pop(sink, None)

        return stop

    async def inbox(self, body: dict[str, Any]) -> dict[str, Any]:
        """
        The history of one group or conversation, or of every group, oldest
        first, the last ``limit`` messages of each group.
        """
        limit = body.get("limit", 100)
        if not isinstance(limit, int) or not 1 <= limit <= MAX_INBOX:
            raise BadRequest(f"limit is a number of messages from 1 to {MAX_INBOX}")
        to = body.get("to")
        groups = await self.service.group_list()
        for group in groups:
            await self._learn_conversation(group)
        if to is not None:
            chosen, peer = await self._target(to)
            if chosen is not None:
                groups = [chosen]
            else:
                groups = [g for g in groups if self._conversations.get(g.group_id) == peer]
        names = self._contact_names()
        messages = []
        for group in groups:
            history = await self._last(group.group_id, limit)
            messages += [self._message(m, group, names, False) for m in history]
        messages.sort(key=lambda m: (m["sent_at"], m["group"], m["epoch"], m["index"]))
        return {"messages": messages[-limit:]}

    async def _last(self, group_id: bytes, limit: int) -> list[ReceivedMessage]:
        found: list[ReceivedMessage] = []
        after: tuple[int, int] | None = None
        while True:
            page = await self.service.history(group_id, after, MAX_INBOX)
            found = (found + page)[-limit:]
            if len(page) < MAX_INBOX:
                return found
            after = (page[-1].epoch, page[-1].index)

    async def message(self, body: dict[str, Any]) -> dict[str, Any]:
        """
        One message whole, a file's bytes in base64: what ``follow`` saves.
        """
        group = await self._group(body.get("group"))
        epoch, index = body.get("epoch"), body.get("index")
        if not isinstance(epoch, int) or not isinstance(index, int) or epoch < 0 or index < 0:
            raise BadRequest("epoch and index are the message's numbers")
        held = await self.service.history(group.group_id, (epoch, index - 1), 1)
        if not held or (held[0].epoch, held[0].index) != (epoch, index):
            raise BadRequest(f"the group holds no message {epoch}/{index}")
        found = held[0]
        await self._learn_conversation(group)
        return self._message(found, group, self._contact_names(), True)

    # --- consent -------------------------------------------------------------------

    async def invitations(self, body: dict[str, Any]) -> dict[str, Any]:
        names = self._contact_names()
        shown = await self.service.invitations()
        for invitation in shown:
            try:
                invitation["from_name"] = names.get(PeerID.parse(invitation["from"]))
            except InvalidPeerID:
                invitation["from_name"] = None
        return {"invitations": shown}

    async def _invitation(self, body: dict[str, Any]) -> tuple[PeerID, bytes]:
        group = body.get("group")
        pending = await self.service.invitations()
        if isinstance(group, str) and len(group) < 64:
            matching = [i for i in pending if i["group"].startswith(group.lower())]
        else:
            matching = [i for i in pending if i["group"] == group]
        if "peer" in body:
            peer = self._peer(body)
            matching = [i for i in matching if i["from"] == str(peer)]
        if len(matching) != 1:
            raise BadRequest(
                "no such invitation waits (see 'dspring invitations')"
                if not matching
                else "several invitations match; give more of the group's ID"
            )
        return PeerID.parse(matching[0]["from"]), bytes.fromhex(matching[0]["group"])

    async def accept(self, body: dict[str, Any]) -> dict[str, Any]:
        peer, group_id = await self._invitation(body)
        await self._refused_as_bad_request(self.service.accept_invitation(peer, group_id))
        return {"group": group_id.hex(), "from": str(peer)}

    async def decline(self, body: dict[str, Any]) -> dict[str, Any]:
        peer, group_id = await self._invitation(body)
        await self.service.decline_invitation(peer, group_id)
        return {"group": group_id.hex(), "from": str(peer)}

    async def block(self, body: dict[str, Any]) -> dict[str, Any]:
        peer = self._peer(body)
        await self.service.block(peer)
        return {"peer": str(peer)}

    async def unblock(self, body: dict[str, Any]) -> dict[str, Any]:
        peer = self._peer(body)
        await self.service.unblock(peer)
        return {"peer": str(peer)}
