# -*- test-case-name: tests.test_noise,tests.test_noise_vectors,tests.test_noise_interop -*-
"""
The Noise Protocol Framework, revision 34: ``CipherState``,
``SymmetricState`` and ``HandshakeState`` (section 5), driven by handshake
patterns kept as data (section 7) with the ``psk`` modifiers (section 9).

Supported protocol names: ``Noise_<pattern>_25519_ChaChaPoly_<hash>``, where
``<pattern>`` is one of the twelve interactive fundamental patterns (NN, NK,
NX, KN, KK, KX, XN, XK, XX, IN, IK, IX), optionally with ``psk`` modifiers
(``XXpsk3``, ``IKpsk2``, ``NNpsk0+psk2``), and ``<hash>`` is BLAKE2b,
BLAKE2s, SHA256 or SHA512.

Pure module-level code with no I/O: the secure channel
(:mod:`digitalspring.channel`) moves the bytes.

The handshake machine is generic: each pattern is compiled once per role into
tuples of small integer operations (which DH uses which keys is resolved at
compile time), so a message is a short loop with no string handling.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from ._primitives import (
    DHLEN,
    HASHES,
    KEYLEN,
    MAX_MESSAGE_LEN,
    MAX_NONCE,
    TAGLEN,
    DecryptError,
    HandshakeConfigError,
    HandshakeOutOfOrder,
    HashFunction,
    InvalidMessage,
    KeyPair,
    NonceExhausted,
    UnsupportedProtocol,
    chachapoly_decrypt,
    chachapoly_encrypt,
    chachapoly_nonce,
    rekey,
    x25519,
)

__all__ = [
    "PATTERNS",
    "CipherState",
    "HandshakePattern",
    "HandshakeState",
    "NoiseProtocol",
    "SymmetricState",
]


# -- CipherState (section 5.1) ----------------------------------------------


_nonce = chachapoly_nonce


def _check_key(key: bytes | None) -> bytes | None:
    if key is not None and (type(key) is not bytes or len(key) != KEYLEN):
        raise ValueError("a ChaChaPoly key is 32 bytes")
    return key


class CipherState:
    """
    A Noise ``CipherState`` for ChaChaPoly: a key (or none) and a message
    counter.

    After the handshake, :meth:`HandshakeState.split` gives one for each
    direction. Each :meth:`encrypt_with_ad` / :meth:`decrypt_with_ad` is one
    call into ChaCha20-Poly1305 (RFC 8439): libsodium's for the few short
    messages of a handshake, where its per-call cost is lowest, and OpenSSL's
    (through ``cryptography``) for the transport states :meth:`split` makes,
    about 2.4 times as fast on bulk data here: it is what lets the channel
    keep up with TLS. It does not limit message length: the framing layer
    keeps messages within 65535 bytes.
    """

    __slots__ = ("_aead", "_bulk", "_k", "_n")

    def __init__(self, key: bytes | None = None, bulk: bool = False) -> None:
        """
        ``InitializeKey(key)``.

        :param key: a 32-byte key, or ``None`` for the empty key (then
            encryption and decryption return their input unchanged).
        :param bulk: whether this state will carry many messages (a
            transport state), so that OpenSSL's setup cost pays off.
        """
        self._bulk = bulk
        self._set_key(key)
        self._n = 0

    def _set_key(self, key: bytes | None) -> None:
        self._k = _check_key(key)
        self._aead = ChaCha20Poly1305(key) if key is not None and self._bulk else None

    def __repr__(self) -> str:
        return f"<CipherState has_key={self._k is not None} nonce={self._n}>"

    def initialize_key(self, key: bytes | None) -> None:
        """
        ``InitializeKey(key)``: set the key and reset the nonce to zero.
        """
        self._set_key(key)
        self._n = 0

    def has_key(self) -> bool:
        """
        ``HasKey()``.
        """
        return self._k is not None

    @property
    def nonce(self) -> int:
        """
        The nonce the next message will use.
        """
        return self._n

    def set_nonce_for_testing(self, nonce: int) -> None:
        """
        ``SetNonce(nonce)``: for tests that need to reach the end of the
        nonce space. Setting a nonce that was already used breaks the
        security of ChaChaPoly; never call this outside tests.
        """
        if not 0 <= nonce <= MAX_NONCE:
            raise ValueError("a Noise nonce is a 64-bit unsigned integer")
        self._n = nonce

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes | memoryview) -> bytes:
        """
        ``EncryptWithAd(ad, plaintext)``.

        :returns: the ciphertext, 16 bytes longer than ``plaintext``, or
            ``plaintext`` itself if there is no key.
        :raises NonceExhausted: if the nonce has reached ``2^64-1``.
        """
        k = self._k
        if k is None:
            return bytes(plaintext)
        n = self._n
        if n >= MAX_NONCE:
            raise NonceExhausted()
        self._n = n + 1
        aead = self._aead
        if aead is None:
            return chachapoly_encrypt(k, _nonce(n), ad, plaintext)
        return aead.encrypt(_nonce(n), plaintext, ad)

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes | memoryview) -> bytes:
        """
        ``DecryptWithAd(ad, ciphertext)``. The nonce advances only when the
        message authenticates.

        :returns: the plaintext, or ``ciphertext`` itself if there is no key.
        :raises DecryptError: if the message fails authentication.
        :raises NonceExhausted: if the nonce has reached ``2^64-1``.
        """
        k = self._k
        if k is None:
            return bytes(ciphertext)
        n = self._n
        if n >= MAX_NONCE:
            raise NonceExhausted()
        aead = self._aead
        if aead is None:
            plaintext = chachapoly_decrypt(k, _nonce(n), ad, ciphertext)
        else:
            try:
                plaintext = aead.decrypt(_nonce(n), ciphertext, ad)
            except InvalidTag:
                raise DecryptError() from None
        self._n = n + 1
        return plaintext

    def rekey(self) -> None:
        """
        ``Rekey()``: replace the key with ``REKEY(k)``, keeping the nonce.
        Both sides must rekey at the same point in the message stream.
        """
        if self._k is not None:
            self._set_key(rekey(self._k))


# -- SymmetricState (section 5.2) -------------------------------------------


class SymmetricState:
    """
    A Noise ``SymmetricState``: the chaining key, the handshake hash and a
    :class:`CipherState`.
    """

    __slots__ = ("_hash", "_hkdf2", "_hkdf3", "cipher", "ck", "h")

    ck: bytes
    h: bytes
    cipher: CipherState

    def __init__(self, protocol: NoiseProtocol) -> None:
        """
        ``InitializeSymmetric(protocol_name)``, with the protocol name's
        initial hash precomputed by ``protocol``.
        """
        hash_function = protocol.hash
        self._hash = hash_function.hash
        self._hkdf2 = hash_function.hkdf2
        self._hkdf3 = hash_function.hkdf3
        self.h = self.ck = protocol.initial_hash
        self.cipher = CipherState()

    def mix_key(self, input_key_material: bytes) -> None:
        """
        ``MixKey(input_key_material)``.
        """
        self.ck, temp_k = self._hkdf2(self.ck, input_key_material)
        self.cipher.initialize_key(temp_k[:32])

    def mix_hash(self, data: bytes) -> None:
        """
        ``MixHash(data)``.
        """
        self.h = self._hash(self.h + data)

    def mix_key_and_hash(self, input_key_material: bytes) -> None:
        """
        ``MixKeyAndHash(input_key_material)``, for pre-shared keys.
        """
        self.ck, temp_h, temp_k = self._hkdf3(self.ck, input_key_material)
        self.h = self._hash(self.h + temp_h)
        self.cipher.initialize_key(temp_k[:32])

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        """
        ``EncryptAndHash(plaintext)``.
        """
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.h = self._hash(self.h + ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        """
        ``DecryptAndHash(ciphertext)``.

        :raises DecryptError: if ``ciphertext`` fails authentication.
        """
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.h = self._hash(self.h + ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        """
        ``Split()``: the initiator-to-responder and responder-to-initiator
        cipher states.
        """
        temp_k1, temp_k2 = self._hkdf2(self.ck, b"")
        return CipherState(temp_k1[:32], bulk=True), CipherState(temp_k2[:32], bulk=True)


# -- handshake patterns (sections 7 and 9) -----------------------------------

# name: (initiator pre-message, responder pre-message, message patterns);
# messages alternate initiator -> responder, responder -> initiator, ...
_FUNDAMENTAL: Final[
    dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, ...], ...]]]
] = {
    "NN": ((), (), (("e",), ("e", "ee"))),
    "NK": ((), ("s",), (("e", "es"), ("e", "ee"))),
    "NX": ((), (), (("e",), ("e", "ee", "s", "es"))),
    "KN": (("s",), (), (("e",), ("e", "ee", "se"))),
    "KK": (("s",), ("s",), (("e", "es", "ss"), ("e", "ee", "se"))),
    "KX": (("s",), (), (("e",), ("e", "ee", "se", "s", "es"))),
    "XN": ((), (), (("e",), ("e", "ee"), ("s", "se"))),
    "XK": ((), ("s",), (("e", "es"), ("e", "ee"), ("s", "se"))),
    "XX": ((), (), (("e",), ("e", "ee", "s", "es"), ("s", "se"))),
    "IN": ((), (), (("e", "s"), ("e", "ee", "se"))),
    "IK": ((), ("s",), (("e", "es", "s", "ss"), ("e", "ee", "se"))),
    "IX": ((), (), (("e", "s"), ("e", "ee", "se", "s", "es"))),
}


class HandshakePattern:
    """
    A handshake pattern with its modifiers applied, as data.

    :ivar name: the pattern part of a protocol name, e.g. ``"IKpsk2"``.
    :ivar initiator_pre: the initiator's pre-message tokens.
    :ivar responder_pre: the responder's pre-message tokens.
    :ivar messages: the token tuples of each message, in order.
    :ivar psk_count: how many pre-shared keys the pattern consumes.
    """

    __slots__ = ("initiator_pre", "messages", "name", "psk_count", "responder_pre")

    def __init__(
        self,
        name: str,
        initiator_pre: tuple[str, ...],
        responder_pre: tuple[str, ...],
        messages: tuple[tuple[str, ...], ...],
    ) -> None:
        self.name = name
        self.initiator_pre = initiator_pre
        self.responder_pre = responder_pre
        self.messages = messages
        self.psk_count = sum(m.count("psk") for m in messages)

    def __repr__(self) -> str:
        return f"<HandshakePattern {self.name}>"

    @classmethod
    def from_name(cls, name: str) -> HandshakePattern:
        """
        The pattern for a name such as ``"XX"``, ``"IKpsk2"`` or
        ``"NNpsk0+psk2"``.

        :raises UnsupportedProtocol: for an unknown pattern or modifier.
        """
        match = re.fullmatch(r"([NKXI]{2})(\w+(?:\+\w+)*)?", name)
        if match is None or match.group(1) not in _FUNDAMENTAL:
            raise UnsupportedProtocol(f"unsupported Noise handshake pattern {name!r}")
        initiator_pre, responder_pre, fundamental = _FUNDAMENTAL[match.group(1)]
        messages = [list(m) for m in fundamental]
        modifiers = match.group(2).split("+") if match.group(2) else []
        if len(set(modifiers)) != len(modifiers):
            raise UnsupportedProtocol(f"repeated modifier in Noise pattern {name!r}")
        for modifier in modifiers:
            psk = re.fullmatch(r"psk(0|[1-9][0-9]?)", modifier)
            if psk is None or int(psk.group(1)) > len(messages):
                raise UnsupportedProtocol(
                    f"unsupported modifier {modifier!r} in Noise pattern {name!r}"
                )
            position = int(psk.group(1))
            if position == 0:
                messages[0].insert(0, "psk")
            else:
                messages[position - 1].append("psk")
        return cls(name, initiator_pre, responder_pre, tuple(tuple(m) for m in messages))


PATTERNS: Final = tuple(_FUNDAMENTAL)
"""
The names of the fundamental patterns supported (before modifiers).
"""

# Operations of a compiled message, from one side's point of view.
_E: Final = 0  # send or receive an ephemeral public key
_S: Final = 1  # send or receive a static public key
_PSK: Final = 2  # mix in the next pre-shared key
_DH_E_RE: Final = 3  # DH(local ephemeral, remote ephemeral)
_DH_E_RS: Final = 4  # DH(local ephemeral, remote static)
_DH_S_RE: Final = 5  # DH(local static, remote ephemeral)
_DH_S_RS: Final = 6  # DH(local static, remote static)

_DH_OPS: Final = {
    # token: (operation for the initiator, operation for the responder)
    "ee": (_DH_E_RE, _DH_E_RE),
    "es": (_DH_E_RS, _DH_S_RE),
    "se": (_DH_S_RE, _DH_E_RS),
    "ss": (_DH_S_RS, _DH_S_RS),
}


class _Role:
    """
    A pattern compiled for one side: operations and fixed overhead of each
    message, and which keys that side must be given.
    """

    __slots__ = ("messages", "needs_rs", "needs_s", "pre_local_s", "pre_order", "pre_remote_s")

    def __init__(self, pattern: HandshakePattern, initiator: bool) -> None:
        side = 0 if initiator else 1
        psk_mode = pattern.psk_count > 0
        messages: list[tuple[tuple[int, ...], int]] = []
        uses_s = False
        has_key = False
        for index, tokens in enumerate(pattern.messages):
            mine = (index % 2 == 0) == initiator
            ops: list[int] = []
            overhead = 0
            for step in tokens:
                if step == "e":
                    ops.append(_E)
                    overhead += DHLEN
                    has_key = has_key or psk_mode
                elif step == "s":
                    ops.append(_S)
                    overhead += DHLEN + (TAGLEN if has_key else 0)
                    uses_s = uses_s or mine
                elif step == "psk":
                    ops.append(_PSK)
                    has_key = True
                else:
                    op = _DH_OPS[step][side]
                    ops.append(op)
                    uses_s = uses_s or op in (_DH_S_RE, _DH_S_RS)
                    has_key = True
            overhead += TAGLEN if has_key else 0
            messages.append((tuple(ops), overhead))
        local_pre = pattern.initiator_pre if initiator else pattern.responder_pre
        remote_pre = pattern.responder_pre if initiator else pattern.initiator_pre
        self.messages = tuple(messages)
        self.pre_local_s = "s" in local_pre
        self.pre_remote_s = "s" in remote_pre
        # Pre-messages are hashed initiator's first, whichever side we are.
        self.pre_order = (True, False) if initiator else (False, True)
        self.needs_s = uses_s or self.pre_local_s
        self.needs_rs = self.pre_remote_s


class NoiseProtocol:
    """
    A parsed Noise protocol name: the pattern, DH, cipher and hash, with
    everything that depends only on the name computed once.

    Get one with :meth:`from_name` (cached).

    :ivar name: the full protocol name.
    :ivar pattern: the :class:`HandshakePattern`.
    :ivar dh: the DH function's name (``"25519"``).
    :ivar cipher: the cipher's name (``"ChaChaPoly"``).
    :ivar hash: the :class:`HashFunction`.
    :ivar initial_hash: ``h`` and ``ck`` after ``InitializeSymmetric``.
    """

    __slots__ = ("_roles", "cipher", "dh", "hash", "initial_hash", "name", "pattern")

    name: str
    pattern: HandshakePattern
    dh: str
    cipher: str
    hash: HashFunction
    initial_hash: bytes

    def __init__(self, name: str, pattern: HandshakePattern, hash: HashFunction) -> None:
        self.name = name
        self.pattern = pattern
        self.dh = "25519"
        self.cipher = "ChaChaPoly"
        self.hash = hash
        encoded = name.encode("ascii")
        if len(encoded) <= hash.hashlen:
            self.initial_hash = encoded.ljust(hash.hashlen, b"\0")
        else:
            self.initial_hash = hash.hash(encoded)
        self._roles = (_Role(pattern, initiator=False), _Role(pattern, initiator=True))

    def __repr__(self) -> str:
        return f"<NoiseProtocol {self.name}>"

    @classmethod
    def from_name(cls, name: str) -> NoiseProtocol:
        """
        The protocol for a name such as
        ``"Noise_IK_25519_ChaChaPoly_BLAKE2b"``.

        :raises UnsupportedProtocol: if any part of the name is unknown.
        """
        return _protocol_from_name(name)


@lru_cache(maxsize=64)
def _protocol_from_name(name: str) -> NoiseProtocol:
    parts = name.split("_")
    if len(parts) != 5 or parts[0] != "Noise" or not name.isascii():
        raise UnsupportedProtocol(f"not a Noise protocol name: {name!r}")
    _, pattern_name, dh, cipher, hash_name = parts
    if dh != "25519":
        raise UnsupportedProtocol(f"unsupported Noise DH function {dh!r}")
    if cipher != "ChaChaPoly":
        raise UnsupportedProtocol(f"unsupported Noise cipher {cipher!r}")
    if hash_name not in HASHES:
        raise UnsupportedProtocol(f"unsupported Noise hash function {hash_name!r}")
    return NoiseProtocol(name, HandshakePattern.from_name(pattern_name), HASHES[hash_name])


# -- HandshakeState (section 5.3) --------------------------------------------

# Where a handshake is: whose turn it is, or how it ended.
_WRITE: Final = 0
_READ: Final = 1
_DONE: Final = 2
_SPLIT: Final = 3
_FAILED: Final = 4

_ORDER_MESSAGES: Final = {
    _WRITE: "it is this side's turn to write a message",
    _READ: "it is this side's turn to read a message",
    _DONE: "the handshake is complete",
    _SPLIT: "the handshake is complete and already split",
    _FAILED: "the handshake failed and must be abandoned",
}


def _check_public(key: bytes | None, what: str) -> bytes | None:
    if key is not None and (type(key) is not bytes or len(key) != DHLEN):
        raise HandshakeConfigError(f"{what} must be a {DHLEN}-byte X25519 public key")
    return key


def _key_pair(key: bytes | KeyPair | None) -> KeyPair | None:
    if key is None or isinstance(key, KeyPair):
        return key
    return KeyPair.from_private(key)


class HandshakeState:
    """
    A Noise ``HandshakeState``: one side of one handshake.

    Call :meth:`write_message` and :meth:`read_message` in the order of the
    pattern (:attr:`writes_next` says which is due) until :attr:`complete`,
    then :meth:`split` once for the transport cipher states. Any error
    abandons the handshake: later calls raise :class:`HandshakeOutOfOrder`.
    """

    __slots__ = (
        "_e",
        "_index",
        "_initiator",
        "_messages",
        "_protocol",
        "_psk_mode",
        "_psks",
        "_re",
        "_rs",
        "_s",
        "_state",
        "_sym",
    )

    def __init__(
        self,
        protocol: NoiseProtocol | str,
        initiator: bool,
        prologue: bytes = b"",
        s: bytes | KeyPair | None = None,
        rs: bytes | None = None,
        e: bytes | KeyPair | None = None,
        psks: Sequence[bytes] = (),
    ) -> None:
        """
        ``Initialize(handshake_pattern, initiator, prologue, s, e, rs, re)``.

        :param protocol: the protocol, or its name.
        :param initiator: whether this side sends the first message.
        :param prologue: data both sides must agree on; a mismatch fails the
            handshake.
        :param s: this side's static key pair, or its 32-byte private key,
            if the pattern uses one.
        :param rs: the peer's 32-byte static public key, if the pattern says
            it is known in advance (the ``K`` and ``I`` patterns' responder key).
        :param e: a fixed ephemeral key pair or private key, **for test
            vectors only**: reusing an ephemeral key destroys the handshake's
            security. By default a fresh one is generated.
        :param psks: the 32-byte pre-shared keys, one per ``psk`` token.
        :raises UnsupportedProtocol: for an unsupported protocol name.
        :raises HandshakeConfigError: if the keys do not fit the pattern.
        """
        if isinstance(protocol, str):
            protocol = NoiseProtocol.from_name(protocol)
        role = protocol._roles[initiator]
        s_pair = _key_pair(s)
        rs = _check_public(rs, "the remote static key")
        if role.needs_s != (s_pair is not None):
            raise HandshakeConfigError(
                f"{protocol.pattern.name} {'needs' if role.needs_s else 'takes no'} "
                "local static key on this side"
            )
        if role.needs_rs != (rs is not None):
            raise HandshakeConfigError(
                f"{protocol.pattern.name} {'needs' if role.needs_rs else 'takes no'} "
                "remote static key in advance on this side"
            )
        psks = tuple(psks)
        if len(psks) != protocol.pattern.psk_count or any(
            type(psk) is not bytes or len(psk) != 32 for psk in psks
        ):
            raise HandshakeConfigError(
                f"{protocol.pattern.name} needs {protocol.pattern.psk_count} "
                "pre-shared keys of 32 bytes"
            )
        self._protocol = protocol
        self._initiator = initiator
        self._messages = role.messages
        self._s = s_pair
        self._e = _key_pair(e)
        self._rs = rs
        self._re: bytes | None = None
        self._psks = psks[::-1]  # popped from the end, in token order
        self._psk_mode = bool(psks)
        self._index = 0
        self._state = _WRITE if initiator else _READ

        sym = self._sym = SymmetricState(protocol)
        sym.mix_hash(prologue)
        for local in role.pre_order:
            if local and role.pre_local_s:
                assert s_pair is not None
                sym.mix_hash(s_pair.public)
            elif not local and role.pre_remote_s:
                assert rs is not None
                sym.mix_hash(rs)

    def __repr__(self) -> str:
        side = "initiator" if self._initiator else "responder"
        return f"<HandshakeState {self._protocol.name} {side} message {self._index}>"

    @property
    def protocol(self) -> NoiseProtocol:
        """
        The protocol this handshake runs.
        """
        return self._protocol

    @property
    def initiator(self) -> bool:
        """
        Whether this side sent the first message.
        """
        return self._initiator

    @property
    def writes_next(self) -> bool:
        """
        Whether the next call due is :meth:`write_message` (else
        :meth:`read_message`, or none once the handshake is over).
        """
        return self._state == _WRITE

    @property
    def complete(self) -> bool:
        """
        Whether every handshake message has been written or read.
        """
        return self._state in (_DONE, _SPLIT)

    @property
    def remote_static(self) -> bytes | None:
        """
        The peer's static public key: given in advance, or learned from the
        handshake (authenticated once :attr:`complete`); ``None`` if the
        pattern never sends it.
        """
        return self._rs

    @property
    def handshake_hash(self) -> bytes:
        """
        ``GetHandshakeHash()``: the final ``h``, unique to this session and
        equal on both sides, for channel binding.

        :raises HandshakeOutOfOrder: before the handshake is complete.
        """
        if self._state not in (_DONE, _SPLIT):
            raise HandshakeOutOfOrder("the handshake hash exists only once it is complete")
        return self._sym.h

    def _fail(self, expected: int) -> HandshakeOutOfOrder:
        if self._state == _FAILED:
            return HandshakeOutOfOrder(_ORDER_MESSAGES[_FAILED])
        return HandshakeOutOfOrder(
            f"{_ORDER_MESSAGES[self._state]}, not to {'write' if expected == _WRITE else 'read'}"
        )

    def _advance(self) -> None:
        self._index += 1
        if self._index == len(self._messages):
            self._state = _DONE
        else:
            self._state = _READ if self._state == _WRITE else _WRITE

    def _dh(self, op: int) -> bytes:
        # Every key below was checked at initialisation or sliced to DHLEN.
        if op == _DH_E_RE:
            return x25519(self._e.private, self._re)  # type: ignore[union-attr,arg-type]
        if op == _DH_E_RS:
            return x25519(self._e.private, self._rs)  # type: ignore[union-attr,arg-type]
        if op == _DH_S_RE:
            return x25519(self._s.private, self._re)  # type: ignore[union-attr,arg-type]
        return x25519(self._s.private, self._rs)  # type: ignore[union-attr,arg-type]

    def write_message(self, payload: bytes = b"") -> bytes:
        """
        ``WriteMessage(payload, message_buffer)``.

        :param payload: application data carried in the message; it is
            encrypted once the pattern has a key (it is sent in clear in the
            first message of ``NN``, ``XX`` and the like).
        :returns: the handshake message to send.
        :raises HandshakeOutOfOrder: if it is not this side's turn to write.
        :raises InvalidMessage: if the message would exceed 65535 bytes (the
            handshake is unchanged and can go on with a smaller payload).
        :raises InvalidPublicKey: if a DH with a key the peer sent earlier
            gives an all-zero secret.
        """
        if self._state != _WRITE:
            raise self._fail(_WRITE)
        ops, overhead = self._messages[self._index]
        if overhead + len(payload) > MAX_MESSAGE_LEN:
            raise InvalidMessage()
        self._state = _FAILED  # until the message is fully written
        sym = self._sym
        parts = []
        for op in ops:
            if op == _E:
                e = self._e
                if e is None:
                    e = self._e = KeyPair.generate()
                parts.append(e.public)
                sym.mix_hash(e.public)
                if self._psk_mode:
                    sym.mix_key(e.public)
            elif op == _S:
                parts.append(sym.encrypt_and_hash(self._s.public))  # type: ignore[union-attr]
            elif op == _PSK:
                sym.mix_key_and_hash(self._psks[-1])
                self._psks = self._psks[:-1]
            else:
                sym.mix_key(self._dh(op))
        parts.append(sym.encrypt_and_hash(payload))
        self._state = _WRITE
        self._advance()
        return b"".join(parts)

    def read_message(self, message: bytes) -> bytes:
        """
        ``ReadMessage(message, payload_buffer)``.

        :param message: a whole handshake message from the peer.
        :returns: the payload it carries.
        :raises HandshakeOutOfOrder: if it is not this side's turn to read.
        :raises InvalidMessage: if ``message`` is too short for its pattern or
            longer than 65535 bytes.
        :raises DecryptError: if anything in it fails authentication.
        :raises InvalidPublicKey: if it carries a low-order public key.
        """
        if self._state != _READ:
            raise self._fail(_READ)
        if type(message) is not bytes:
            message = bytes(message)
        ops, overhead = self._messages[self._index]
        self._state = _FAILED  # until the message is fully read
        if not overhead <= len(message) <= MAX_MESSAGE_LEN:
            raise InvalidMessage()
        sym = self._sym
        position = 0
        for op in ops:
            if op == _E:
                end = position + DHLEN
                re_ = self._re = message[position:end]
                position = end
                sym.mix_hash(re_)
                if self._psk_mode:
                    sym.mix_key(re_)
            elif op == _S:
                end = position + DHLEN + (TAGLEN if sym.cipher.has_key() else 0)
                self._rs = sym.decrypt_and_hash(message[position:end])
                position = end
            elif op == _PSK:
                sym.mix_key_and_hash(self._psks[-1])
                self._psks = self._psks[:-1]
            else:
                sym.mix_key(self._dh(op))
        payload = sym.decrypt_and_hash(message[position:])
        self._state = _READ
        self._advance()
        return payload

    def split(self) -> tuple[CipherState, CipherState]:
        """
        ``Split()``, once the handshake is complete.

        :returns: ``(send, receive)``: the cipher states for messages this
            side sends and for those it receives.
        :raises HandshakeOutOfOrder: if the handshake is not complete, or was
            already split (a second pair would reuse the same keys and nonces).
        """
        if self._state != _DONE:
            raise HandshakeOutOfOrder(
                "only a complete handshake can be split, and only once; "
                + _ORDER_MESSAGES[self._state]
            )
        self._state = _SPLIT
        initiator_to_responder, responder_to_initiator = self._sym.split()
        # Nothing of the handshake's secrets is needed any more.
        self._e = None
        self._s = None
        self._sym.ck = b""
        self._sym.cipher = CipherState()
        if self._initiator:
            return initiator_to_responder, responder_to_initiator
        return responder_to_initiator, initiator_to_responder
