# -*- test-case-name: tests.test_group_crypto -*-
"""
What a message says, as it is inside the encryption: a small header, the
data, and zeros up to a size bucket.  Canonical encoding::

    varint  version (1)
    varint  send time (Unix seconds)
    varint  content type (1 text, 2 file)
    varint  length of the file name, then the name in UTF-8 (none for text)
    varint  length of the data, then the data
    zeros   up to padded_size(length so far)

The send time travels here, not in the manifest, so that only members see
it.  Buckets are Padmé's (Nikitin et al., "Reducing Metadata Leakage from
Encrypted Files and Communication with PURBs", PETS 2019) above a floor of
256 bytes: a length of ``L`` bytes is rounded up to keep only its top
``floor(log2(floor(log2 L))) + 1`` bits, which costs at most 12% (power-of-two
buckets cost up to 100%: a 5 MiB file would travel as 8 MiB) while leaking
only ``O(log log L)`` bits of the length, as power-of-two buckets do.  The
floor makes every message up to 256 bytes (most texts) look the same.
"""

from __future__ import annotations

import enum

from attrs import frozen

from .._codec import Reader, varint
from ..errors import DigitalSpringError

CONTENT_VERSION = 1
#: The smallest bucket: every content of up to this many bytes pads to it.
MIN_PADDED_SIZE = 256
#: The largest padded content, in bytes.
MAX_PADDED_SIZE = 64 * 1024 * 1024
#: The longest file name, in bytes of UTF-8.
MAX_FILE_NAME = 255


class MalformedContent(DigitalSpringError):
    """
    The decrypted message is not in its one canonical form.
    """


class ContentTooLarge(DigitalSpringError):
    """
    The message is larger than a group message may be (64 MiB with its
    padding).
    """


class ContentType(enum.IntEnum):
    """
    What a message holds.
    """

    TEXT = 1
    FILE = 2


@frozen
class Content:
    """
    A message as the application sees it.

    :ivar sent_at: when the owner sent it, in Unix seconds (the owner's
        word: nothing checks it).
    :ivar file_name: the name the owner gave a file, unsanitised; empty for
        a text.
    :ivar data: the text in UTF-8, or the file's bytes.
    """

    sent_at: int
    content_type: ContentType
    data: bytes
    file_name: str = ""


def text_content(sent_at: int, text: str) -> Content:
    """
    A text message.
    """
    return Content(sent_at, ContentType.TEXT, text.encode("utf-8"))


def file_content(sent_at: int, name: str, data: bytes) -> Content:
    """
    A file message.
    """
    return Content(sent_at, ContentType.FILE, data, name)


def padme(length: int) -> int:
    """
    Padmé's bucket of ``length``: ``length`` rounded up so that it keeps
    only its top ``floor(log2(E)) + 1`` bits, where ``E = floor(log2
    length)``.
    """
    if length < 3:
        return length
    exponent = length.bit_length() - 1
    mask = (1 << (exponent - exponent.bit_length())) - 1
    return (length + mask) & ~mask


def padded_size(length: int) -> int:
    """
    The bucket of a content of ``length`` bytes.
    """
    return max(MIN_PADDED_SIZE, padme(length))


def _header(content: Content) -> bytes:
    if content.content_type == ContentType.TEXT and content.file_name:
        raise ValueError("a text has no file name")
    name = content.file_name.encode("utf-8")
    if content.content_type == ContentType.FILE and not 0 < len(name) <= MAX_FILE_NAME:
        raise ValueError(f"a file name has 1 to {MAX_FILE_NAME} bytes, not {len(name)}")
    return b"".join(
        [
            varint(CONTENT_VERSION),
            varint(content.sent_at),
            varint(content.content_type),
            varint(len(name)),
            name,
            varint(len(content.data)),
        ]
    )


def pad_content(content: Content) -> bytes:
    """
    The canonical encoding of ``content``, padded to its bucket.

    :raises ContentTooLarge: when its bucket is larger than
        :data:`MAX_PADDED_SIZE`.
    :raises ValueError: when a text has a file name, or a file has none.
    """
    header = _header(content)
    length = len(header) + len(content.data)
    size = padded_size(length)
    if size > MAX_PADDED_SIZE:
        raise ContentTooLarge(
            f"the message takes {size} bytes with its padding; at most {MAX_PADDED_SIZE}"
        )
    return b"".join([header, content.data, bytes(size - length)])


def unpad_content(padded: bytes) -> Content:
    """
    The content in a padded encoding, refused unless it is the canonical
    one: the right bucket, zeros after the data, a text in UTF-8.

    :raises MalformedContent: when it is not.
    """
    reader = Reader(padded, MalformedContent, "message")
    version = reader.varint()
    if version != CONTENT_VERSION:
        raise reader.fail(f"is of version {version}, not {CONTENT_VERSION}")
    sent_at = reader.varint()
    kind = reader.varint()
    try:
        content_type = ContentType(kind)
    except ValueError:
        raise reader.fail(f"has content type {kind}, which is neither text nor file") from None
    try:
        name = reader.take(reader.varint(MAX_FILE_NAME)).decode("utf-8")
    except UnicodeDecodeError:
        raise reader.fail("has a file name that is not UTF-8") from None
    data = reader.take(reader.varint(MAX_PADDED_SIZE))
    content = Content(sent_at, content_type, data, name)
    if content_type == ContentType.TEXT:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise reader.fail("is a text that is not UTF-8") from None
    try:
        header = _header(content)
    except ValueError as e:
        raise reader.fail(f"is inconsistent: {e}") from None
    length = len(header) + len(data)
    if header != padded[: len(header)] or reader.offset != length:
        raise reader.fail("is not canonically encoded")
    if len(padded) != padded_size(length):
        raise reader.fail(f"has {len(padded)} bytes, not the {padded_size(length)} of its bucket")
    if padded.count(0, length) != len(padded) - length:
        raise reader.fail("is padded with bytes other than zeros")
    return content
