"""
Replay of the published Noise test vectors (cacophony and snow) against
:mod:`digitalspring.channel._noise`, byte for byte.

The vectors live outside the project, in ``../shared/noise-vectors/`` next to
the repository (see ``SOURCES.md`` there); every vector becomes one test
method here, so trial's count of passed tests is the count replayed. Vectors
for protocols we do not implement become skipped tests naming the reason, and
everything is skipped with a clear reason when the folder is absent.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from digitalspring.channel import HandshakeState, NoiseProtocol, UnsupportedProtocol

VECTORS_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "noise-vectors"


def _hex(vector: dict[str, Any], field: str) -> bytes | None:
    value = vector.get(field)
    return None if value is None else bytes.fromhex(value)


def _side(vector: dict[str, Any], prefix: str, initiator: bool) -> HandshakeState:
    return HandshakeState(
        vector["protocol_name"],
        initiator,
        prologue=_hex(vector, prefix + "prologue") or b"",
        s=_hex(vector, prefix + "static"),
        e=_hex(vector, prefix + "ephemeral"),
        rs=_hex(vector, prefix + "remote_static"),
        psks=[bytes.fromhex(psk) for psk in vector.get(prefix + "psks", [])],
    )


def replay(test: SynchronousTestCase, vector: dict[str, Any]) -> None:
    """
    Run both sides of ``vector`` and compare every output with it.

    Messages alternate initiator, responder, ... across the whole list: the
    handshake messages first, then transport messages on the split cipher
    states.
    """
    initiator = _side(vector, "init_", True)
    responder = _side(vector, "resp_", False)
    handshake_length = len(initiator.protocol.pattern.messages)
    messages = vector["messages"]
    test.assertGreaterEqual(len(messages), handshake_length)
    for index, message in enumerate(messages[:handshake_length]):
        payload = bytes.fromhex(message["payload"])
        ciphertext = bytes.fromhex(message["ciphertext"])
        writer, reader = (initiator, responder) if index % 2 == 0 else (responder, initiator)
        test.assertEqual(writer.write_message(payload).hex(), ciphertext.hex(), f"message {index}")
        test.assertEqual(reader.read_message(ciphertext), payload, f"message {index}")
    test.assertTrue(initiator.complete)
    test.assertTrue(responder.complete)
    test.assertEqual(initiator.handshake_hash, responder.handshake_hash)
    if "handshake_hash" in vector:
        test.assertEqual(initiator.handshake_hash.hex(), vector["handshake_hash"])
    initiator_send, initiator_receive = initiator.split()
    responder_send, responder_receive = responder.split()
    for index, message in enumerate(messages[handshake_length:], handshake_length):
        payload = bytes.fromhex(message["payload"])
        ciphertext = bytes.fromhex(message["ciphertext"])
        send, receive = (
            (initiator_send, responder_receive)
            if index % 2 == 0
            else (responder_send, initiator_receive)
        )
        test.assertEqual(send.encrypt_with_ad(b"", payload).hex(), ciphertext.hex(), index)
        test.assertEqual(receive.decrypt_with_ad(b"", ciphertext), payload, f"message {index}")


def _vectors() -> list[tuple[str, int, dict[str, Any]]]:
    found = []
    for path in sorted(VECTORS_DIR.glob("*.json")):
        for index, vector in enumerate(json.loads(path.read_text())["vectors"]):
            found.append((path.stem, index, vector))
    return found


def _supported(name: str) -> str | None:
    """
    ``None`` if we implement protocol ``name``, else the reason we do not.
    """
    try:
        NoiseProtocol.from_name(name)
    except UnsupportedProtocol as e:
        return str(e)
    return None


def _make_test(source: str, index: int, vector: dict[str, Any]) -> Any:
    name = vector["protocol_name"]
    reason = _supported(name)

    def test(self: SynchronousTestCase) -> None:
        if reason is not None:
            raise SkipTest(f"{name}: {reason}")
        replay(self, vector)

    what = "handshake hash, " if "handshake_hash" in vector else ""
    test.__doc__ = (
        f"{name} ({source} vector {index}) replays byte for byte: every handshake and "
        f"transport ciphertext, {what}and every decrypted payload."
    )
    return test


class NoiseVectorTests(SynchronousTestCase):
    """
    One test per published vector; see the module docstring.
    """

    def test_vectors_found(self) -> None:
        """
        The vector folder holds vectors we implement, so a change of location
        or format cannot turn this suite into silent skips.
        """
        if not VECTORS_DIR.is_dir():
            raise SkipTest(f"no Noise test vectors at {VECTORS_DIR}")
        supported = [v for _, _, v in _vectors() if _supported(v["protocol_name"]) is None]
        self.assertGreater(len(supported), 0)


for _source, _index, _vector in _vectors() if VECTORS_DIR.is_dir() else []:
    _method = re.sub(r"\W", "_", f"test_{_source}_{_index:03d}_{_vector['protocol_name']}")
    setattr(NoiseVectorTests, _method, _make_test(_source, _index, _vector))
