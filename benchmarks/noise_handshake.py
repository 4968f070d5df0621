"""
Full Noise XX handshakes per second, ours against the ``noiseprotocol``
package, in one process and one run.

One handshake is everything both sides do for a new connection:
``Noise_XX_25519_ChaChaPoly_BLAKE2b``, both handshake states created from the
static private key bytes (so each side derives its static public key, as
``noiseprotocol`` must), three messages written and read, and ``split()`` on
both sides. The two implementations alternate in rounds so that a change in
machine load affects both.

Run: ``python benchmarks/noise_handshake.py [--seconds N]``. The last line of
output is one JSON object; ``noise_handshakes_per_s_prebuilt_static`` is ours
when the node hands the same static :class:`KeyPair` to every handshake (what
the channel does).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable

from digitalspring.channel import HandshakeState, KeyPair, NoiseProtocol

NAME = "Noise_XX_25519_ChaChaPoly_BLAKE2b"
PROLOGUE = b"digitalspring benchmark"


def ours(initiator_key: bytes | KeyPair, responder_key: bytes | KeyPair) -> Callable[[], None]:
    protocol = NoiseProtocol.from_name(NAME)

    def handshake() -> None:
        initiator = HandshakeState(protocol, True, PROLOGUE, s=initiator_key)
        responder = HandshakeState(protocol, False, PROLOGUE, s=responder_key)
        responder.read_message(initiator.write_message(b""))
        initiator.read_message(responder.write_message(b""))
        responder.read_message(initiator.write_message(b""))
        initiator.split()
        responder.split()

    return handshake


def theirs(initiator_key: bytes, responder_key: bytes) -> Callable[[], None]:
    from noise.connection import Keypair, NoiseConnection

    name = NAME.encode("ascii")

    def side(initiator: bool, key: bytes) -> NoiseConnection:
        connection = NoiseConnection.from_name(name)
        if initiator:
            connection.set_as_initiator()
        else:
            connection.set_as_responder()
        connection.set_prologue(PROLOGUE)
        connection.set_keypair_from_private_bytes(Keypair.STATIC, key)
        connection.start_handshake()
        return connection

    def handshake() -> None:
        # noiseprotocol splits by itself when the last message is processed.
        initiator = side(True, initiator_key)
        responder = side(False, responder_key)
        responder.read_message(bytes(initiator.write_message(b"")))
        initiator.read_message(bytes(responder.write_message(b"")))
        responder.read_message(bytes(initiator.write_message(b"")))
        assert initiator.handshake_finished and responder.handshake_finished

    return handshake


def rate(handshake: Callable[[], None], seconds: float) -> float:
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(50):
            handshake()
        count += 50
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seconds", type=float, default=6.0, help="total time per implementation")
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args(argv)

    initiator_key, responder_key = os.urandom(32), os.urandom(32)
    contenders = {
        "noise_handshakes_per_s": ours(initiator_key, responder_key),
        "noiseprotocol_handshakes_per_s": theirs(initiator_key, responder_key),
        "noise_handshakes_per_s_prebuilt_static": ours(
            KeyPair.from_private(initiator_key), KeyPair.from_private(responder_key)
        ),
    }
    for handshake in contenders.values():  # warm up
        rate(handshake, 0.2)
    best = dict.fromkeys(contenders, 0.0)
    for round_number in range(options.rounds):
        for field, handshake in contenders.items():
            measured = rate(handshake, options.seconds / options.rounds)
            best[field] = max(best[field], measured)
            print(f"round {round_number + 1}: {field} = {measured:,.0f}", file=sys.stderr)
    result = {field: round(value, 1) for field, value in best.items()}
    result["ratio"] = round(
        best["noise_handshakes_per_s"] / best["noiseprotocol_handshakes_per_s"], 2
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
