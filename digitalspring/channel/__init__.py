"""
Secure channels: the Noise Protocol Framework over any byte stream.
"""

from ._amp import MAX_PING_DATA, PeerConnection, Ping
from ._interfaces import ISecureChannel
from ._noise import (
    PATTERNS,
    CipherState,
    HandshakePattern,
    HandshakeState,
    NoiseProtocol,
    SymmetricState,
)
from ._pool import BackingOff, ConnectionPool, PeerUnreachable
from ._primitives import (
    DecryptError,
    HandshakeConfigError,
    HandshakeOutOfOrder,
    HashFunction,
    InvalidMessage,
    InvalidPublicKey,
    KeyPair,
    NoiseError,
    NonceExhausted,
    UnsupportedProtocol,
)
from ._secure import (
    MAX_FRAME,
    MAX_PLAINTEXT,
    BadFrame,
    ChannelError,
    ChannelSettings,
    FrameTimeout,
    HandshakeFailed,
    HandshakeTimeout,
    NotAChannel,
    PeerMismatch,
    ReplayedHandshake,
    SecureChannelFactory,
    SecureChannelProtocol,
    VersionMismatch,
)

__all__ = [
    "MAX_FRAME",
    "MAX_PING_DATA",
    "MAX_PLAINTEXT",
    "PATTERNS",
    "BackingOff",
    "BadFrame",
    "ChannelError",
    "ChannelSettings",
    "CipherState",
    "ConnectionPool",
    "DecryptError",
    "FrameTimeout",
    "HandshakeConfigError",
    "HandshakeFailed",
    "HandshakeOutOfOrder",
    "HandshakePattern",
    "HandshakeState",
    "HandshakeTimeout",
    "HashFunction",
    "ISecureChannel",
    "InvalidMessage",
    "InvalidPublicKey",
    "KeyPair",
    "NoiseError",
    "NoiseProtocol",
    "NonceExhausted",
    "NotAChannel",
    "PeerConnection",
    "PeerMismatch",
    "PeerUnreachable",
    "Ping",
    "ReplayedHandshake",
    "SecureChannelFactory",
    "SecureChannelProtocol",
    "SymmetricState",
    "UnsupportedProtocol",
    "VersionMismatch",
]
