# -*- test-case-name: tests.test_groups_cli -*-
"""
Showing what peers sent, safely: terminal control characters stripped from
anything printed, and received files saved under sanitised names that
never leave ``DATA_DIR/received/`` nor overwrite a file.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

from twisted.python.filepath import FilePath

#: Where ``dspring follow`` saves the files it receives.
RECEIVED_DIR = "received"

#: The longest saved file name, in bytes (file systems allow 255).
MAX_SAVED_NAME = 200

#: C0 controls but tab and newline, DEL, C1 controls, and the Unicode
#: format characters that reorder or hide text (bidirectional overrides
#: and isolates, zero-width joiners): what could move the cursor, change
#: colours, set the window title, or make a line read other than it is.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
_LINE_BREAKS = re.compile("[\t\n]")


def printable(text: str, lines: bool = False) -> str:
    """
    ``text`` with every terminal control character removed; with
    ``lines``, tabs and newlines stay (a text message's own lines), else
    they become spaces.
    """
    clean = _CONTROL.sub("", text)
    return clean if lines else _LINE_BREAKS.sub(" ", clean)


def safe_file_name(name: str) -> str:
    """
    A file name a peer proposed, made safe to create in one directory:
    no path separators (each becomes ``_``), no control characters, no
    leading dot (so neither ``.`` nor ``..`` nor a hidden file), at most
    :data:`MAX_SAVED_NAME` bytes, and never empty.
    """
    clean = printable(name).replace("/", "_").replace("\\", "_").strip()
    clean = clean.lstrip(".").strip() or "file"
    while len(clean.encode("utf-8")) > MAX_SAVED_NAME:
        stem, dot, ext = clean.rpartition(".")
        if dot and stem and len(ext) <= 16:
            clean = stem[:-1] + "." + ext
        else:
            clean = clean[:-1]
    return clean


def save_received(data_dir: FilePath[str], name: str, data: bytes) -> FilePath[str]:
    """
    Save a received file in ``DATA_DIR/received/`` under its sanitised
    name, adding ``-1``, ``-2``... before the extension while a file has
    the name already: nothing is ever overwritten (the file is created
    with ``O_EXCL``, mode 0600).

    :returns: where it was saved.
    """
    directory = data_dir.child(RECEIVED_DIR)
    directory.makedirs(ignoreExistingDirectory=True)
    os.chmod(directory.path, 0o700)
    return save_in(directory, name, data)


def save_in(directory: FilePath[str], name: str, data: bytes) -> FilePath[str]:
    """
    Save a received file in ``directory`` as :func:`save_received` does.

    :returns: where it was saved.
    """
    base = safe_file_name(name)
    stem, dot, ext = base.rpartition(".")
    if not dot or not stem:
        stem, dot, ext = base, "", ""
    number = 0
    while True:
        candidate = base if number == 0 else f"{stem}-{number}{dot}{ext}"
        path = directory.child(candidate)
        try:
            fd = os.open(path.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            number += 1
            continue
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        return path


def peer_name(peer: str, name: object) -> str:
    """
    A peer as the user knows it: the contact's name, else its peer ID.
    """
    return name if isinstance(name, str) and name else peer


def group_label(message: dict[str, Any]) -> str:
    """
    Where a message belongs, as the user names it: the contact of a
    conversation, the group's petname, or the owner's proposed name in
    quotes with the start of the group's ID.
    """
    if message.get("conversation"):
        return peer_name(message["conversation"], message.get("conversation_name"))
    if message.get("group_name"):
        return str(message["group_name"])
    proposed = printable(str(message.get("proposed_name", "")))
    return f'"{proposed}" {str(message["group"])[:8]}'


#: How many hex digits of its group's ID a message's ID shows.
MESSAGE_ID_DIGITS = 8

_MESSAGE_ID = re.compile(r"\A([0-9a-f]{1,64}):(\d+)/(\d+)\Z")


def message_id(message: dict[str, Any]) -> str:
    """
    The ID ``dspring save`` takes for a message: the first digits of its
    group's ID, its epoch and its index (``3fa2b1c4:0/3``).
    """
    return f"{str(message['group'])[:MESSAGE_ID_DIGITS]}:{message['epoch']}/{message['index']}"


def parse_message_id(text: str) -> tuple[str, int, int]:
    """
    The group ID's digits, epoch and index of a message's ID.

    :raises ValueError: when ``text`` is not of the form
        ``GROUP_DIGITS:EPOCH/INDEX``.
    """
    found = _MESSAGE_ID.match(text.strip().lower())
    if found is None:
        raise ValueError(f"{text!r} is not a message's ID (GROUP:EPOCH/INDEX, as inbox shows)")
    return found.group(1), int(found.group(2)), int(found.group(3))


def message_lines(message: dict[str, Any]) -> list[str]:
    """
    A message as ``inbox`` and ``follow`` print it::

        2026-01-02 10:00:00  [friends] alice: hello
    """
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(message["sent_at"]))
    sender = (
        "you"
        if message.get("outgoing")
        else peer_name(message["sender"], message.get("sender_name"))
    )
    head = f"{when}  [{group_label(message)}] {sender}:"
    if message["type"] == "file":
        name = printable(str(message.get("file_name", "")))
        return [f"{head} file {name!r} ({message['size']} bytes)  id {message_id(message)}"]
    text = message.get("text")
    if text is None:
        return [f"{head} ({message['size']} bytes of text)"]
    first, *rest = printable(text, lines=True).split("\n")
    return [f"{head} {first}", *(f"    {line}" for line in rest)]
